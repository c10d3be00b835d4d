"""Compile the backend's kernels for a GPU target without a GPU (a CPU-only check and a
static performance report).

The interpreter runs the kernels' *semantics* on the CPU but never lowers them, so a
kernel that the GPU compiler rejects (an unsupported dot shape or dtype mix, a type
error in a branch) would pass every CPU test.  This module lowers each kernel through
Triton's real pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin with the bundled ptxas)
for ``GPUTarget("cuda", arch, 32)`` and reports shared memory, registers, spills and
the number of Hopper ``wgmma`` instructions, with the ``tl.dot`` precision the kernels
really use (``runtime.dot_precision``: TF32, for float32 too).

    python benchmarks/triton_static.py --arch 90,80 [--op spatial|channel]
        [--dims D,DG,C] [--dtype bf16|fp16|fp32] [--all-configs]
    python benchmarks/triton_static.py --arch 90 --json PATH [--jobs N]
        [--dtypes bf16,fp16,fp32] [--dims-list 32,64,128,256] [--c-list 256,512]
        [--defaults-only]

``--json`` writes one object per spatial kernel x dtype x shape x configuration (d = dg)
with the keys ``kernel, dtype, d, dg, C, config, default, registers, spill_bytes,
shared_bytes, wgmma, ex2, replication, arch, precision`` (``default``: the configuration
the kernel runs without autotuning, ``GGNET_TRITON_AUTOTUNE=0``; ``ex2``: exponential
instructions in the compiled code; ``replication``: how many times a program computes
each score of its tile, from ``ex2``: 1, or 2-8 where Triton's layout gives several warps
the same scores); forward kernels have ``fwd`` in their name, the ``combine="joint"``
kernels (``joint_kernels.py``) start with ``joint_``.  Must run with
``TRITON_INTERPRET`` unset (``@triton.jit`` reads it at definition time).  The committed
report is ``benchmarks/results/triton_static_sm90.json``; the kernels live in
``ggnet_fast/backends/triton/`` (their tile lists in ``tile_policy.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: What a GPU with this compute capability allows per block (bytes of shared memory).
SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024}
_TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _jit_function(kernel):
    import triton
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


def _ptxas_stats(ptx: str, arch: int) -> tuple[int | None, int | None]:
    """(registers, spill store bytes) from the bundled ptxas ``-v``."""
    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = "sm_90a" if arch == 90 else f"sm_{arch}"
        err = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", src, "-o", src + ".cubin"],
                             capture_output=True, text=True).stderr
    regs = re.findall(r"Used (\d+) registers", err)
    spills = re.findall(r"(\d+) bytes spill stores", err)
    return (int(regs[-1]) if regs else None), (int(spills[-1]) if spills else None)


def compile_kernel(kernel, pointers: dict, scalars: dict, constexprs: dict, config, arch: int,
                   values: dict | None = None):
    """Lower one autotuned kernel with one ``triton.Config``; returns a stats dict.

    Specialised like a launch: every pointer 16-byte aligned and every integer in
    ``values`` that is a multiple of 16 marked divisible by 16 (Triton does this per
    launch; it decides vector widths and whether loads can be pipelined asynchronously).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit_function(kernel)
    consts = {**constexprs, **config.kwargs}
    signature = {}
    for name in fn.arg_names:
        if name in pointers:
            signature[name] = "*" + pointers[name]
        elif name in scalars:
            signature[name] = scalars[name]
        else:
            signature[name] = "constexpr"
            if name not in consts:
                raise ValueError(f"{fn.__name__}: no value for constexpr {name}")
    consts = {k: v for k, v in consts.items() if k in fn.arg_names}
    values = values or {}
    aligned = [n for n in fn.arg_names
               if n in pointers or (n in scalars and values.get(n, 1) % 16 == 0)]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    compiled = triton.compile(ASTSource(fn, signature, constexprs=consts, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": config.num_warps,
                                       "num_stages": config.num_stages})
    ptx = compiled.asm["ptx"]
    regs, spills = _ptxas_stats(ptx, arch)
    return {"kernel": fn.__name__, "shared": compiled.metadata.shared, "regs": regs,
            "spills": spills, "wgmma": len(re.findall(r"\bwgmma\.mma_async", ptx)),
            "ex2": len(re.findall(r"\bex2\.approx", ptx))}


def spatial_jobs(dtype: str, d: int, dg: int, c: int, no_grad_fwd: bool = True,
                 prec: str | None = None) -> list:
    """(label, kernel, pointer dtypes, scalar types, constexprs) for the spatial kernels,
    each specialised as the launcher specialises it for ``dtype``; ``no_grad_fwd`` adds
    the forward without the o2 accumulator (inference) to the training one."""
    from ggnet_fast.backends.triton import joint_kernels as jk
    from ggnet_fast.backends.triton import spatial_kernels as sk
    from ggnet_fast.backends.triton.runtime import block, dot_precision
    scalars = dict(N="i32", D="i32", DG="i32", C="i32", DT="i32")
    io = dict(Q=dtype, K=dtype, MU=dtype)
    f32 = "fp32"
    prec = prec or dot_precision()
    row_scale = dtype == "fp16"
    bwd = dict(BLOCK_D=block(d), BLOCK_DG=block(dg), BLOCK_C=block(c), ROW_SCALE=row_scale,
               PREC=prec)
    fwd_ptrs = dict(**io, MUSUM=f32, STATS=f32, O=f32, O2=f32)
    jobs = [
        ("fwd_lse", sk._lse_kernel, dict(Q=dtype, K=dtype, STATS=f32), scalars,
         dict(BLOCK_D=block(d), BLOCK_DG=block(dg), PREC=prec)),
        ("fwd", sk._fwd_kernel, fwd_ptrs, scalars,
         dict(BLOCK_K=block(d + dg), SAVE_O2=False, PREC=prec)),
        ("fwd_o2", sk._fwd_kernel, fwd_ptrs, scalars,
         dict(BLOCK_K=block(d + dg), SAVE_O2=True, PREC=prec)),
        ("bwd_dq", sk._bwd_dq_kernel,
         dict(**io, DOL=dtype, DSC=f32, STATS=f32, BST=f32, DTH=dtype, DET=dtype), scalars,
         dict(**bwd, R_PASS=False)),
        ("bwd_dkv", sk._bwd_dkv_kernel,
         dict(**io, DOL=dtype, DSC=f32, DMUB=f32, STATS=f32, BST=f32, DPH=dtype, DRH=dtype,
              DMU=dtype), scalars, bwd),
    ]
    joint = dict(BLOCK_K=block(d + dg), BLOCK_C=block(c), ROW_SCALE=row_scale, PREC=prec)
    grads = dict(DOS=dtype, DSC=f32, LSE=f32, DV=f32)
    jobs += [
        ("joint_fwd", jk._fwd_kernel, dict(**io, LSE=f32, O=f32), scalars,
         dict(BLOCK_K=block(d + dg), PREC=prec)),
        ("joint_dq", jk._dq_kernel, dict(**io, **grads, DTH=dtype, DET=dtype), scalars, joint),
        ("joint_dkv", jk._dkv_kernel, dict(**io, **grads, DPH=dtype, DRH=dtype, DMU=dtype),
         scalars, joint),
    ]
    return [j for j in jobs if no_grad_fwd or j[0] != "fwd"]


def channel_jobs(dtype: str, c: int) -> list:
    from ggnet_fast.backends.triton import channel_kernels as ck
    from ggnet_fast.backends.triton.runtime import block, dot_precision
    f32 = "fp32"
    prec = dot_precision()
    cc = dict(C="i32", scale="fp32")
    cn = dict(C="i32", N="i32")
    strides = dict(C="i32", N="i32", sw1r="i32", sw1k="i32", sw2r="i32", sw2k="i32")
    maps = {n: f32 for n in ("A", "B", "E", "LR", "CR")}
    jobs = [
        ("gram", ck._gram_kernel, dict(X1=dtype, Y1=dtype, X2=dtype, Y2=dtype, OUT1=f32, OUT2=f32),
         cn, dict(TWO=True, PREC=prec)),
        ("gram_dq", ck._gram_kernel, dict(X1=f32, Y1=dtype, X2=f32, Y2=dtype, OUT1=f32, OUT2=f32),
         cn, dict(TWO=False, PREC=prec)),
        ("apply_fwd", ck._apply_kernel,
         dict(W1=f32, X1=dtype, W2=f32, X2=dtype, LR=f32, CR=f32, OUT=f32), strides,
         dict(SYM1=False, TWO=False, COLSUM=True, DIV=True, RW_C=True, CW_C=False, XS_L=False,
              PREC=prec)),
        ("apply_dy", ck._apply_kernel,
         dict(W1=f32, X1=dtype, W2=f32, X2=f32, LR=f32, CR=f32, OUT=f32), strides,
         dict(SYM1=True, TWO=True, COLSUM=True, DIV=False, RW_C=False, CW_C=True, XS_L=True,
              PREC=prec)),
        ("softmax_bwd", ck._softmax_bwd_kernel,
         {n: f32 for n in ("S1", "D1", "S2", "D2", "O1", "O2")}, cc, dict(BLOCK_C=block(c))),
    ]
    for matmul in (False, True):
        for maxminus in (False, True):
            flags = dict(BLOCK_C=block(c), MATMUL=matmul, MAXMINUS=maxminus, PREC=prec)
            tag = f"{'matmul' if matmul else 'product'}{'-maxminus' if maxminus else ''}"
            jobs.append((f"map[{tag}]", ck._map_kernel, maps, cc, flags))
            jobs.append((f"map_bwd[{tag}]", ck._map_bwd_kernel,
                         {n: f32 for n in ("A", "B", "EC", "LR", "CR", "DQ", "DA", "DB", "DM0",
                                           "SZ", "SG")}, cc, flags))
    return jobs


def _configs_for(kernel, dtype: str, d: int, dg: int, c: int, consts: dict,
                 arch: int = 90) -> list:
    """The configurations the autotuner would time for these sizes on ``arch``; the first
    is the default (the one used with ``GGNET_TRITON_AUTOTUNE=0``)."""
    import types

    import torch

    from ggnet_fast.backends.triton.runtime import autotune_candidates
    like = types.SimpleNamespace(dtype=getattr(torch, _TORCH_DTYPE[dtype]))
    return autotune_candidates(kernel, dict(N=4096, D=d, DG=dg, C=c, Q=like, Y1=like, ARCH=arch,
                                            **consts))


def run(arch: int, op: str, dims: tuple[int, int, int], all_configs: bool, dtype: str = "bf16"):
    """Compile every kernel of ``op``; yields ``(label, config, stats or exception)``."""
    d, dg, c = dims
    jobs = spatial_jobs(dtype, d, dg, c, False) if op == "spatial" else channel_jobs(dtype, c)
    for label, kernel, pointers, scalars, consts in jobs:
        configs = _configs_for(kernel, dtype, d, dg, c, consts, arch)
        for config in configs if all_configs else configs[:1]:
            yield label, config, _compile_one(kernel, pointers, scalars, consts, config, arch,
                                              dims)


def _compile_one(kernel, pointers, scalars, consts, config, arch, dims):
    """``dims`` = (d, dg, C): the integer arguments' values (N = 4096)."""
    from ggnet_fast.backends.triton.tile_policy import c_block
    d, dg, c = dims
    extra = {}
    if "C_SPLIT" in config.kwargs:  # the heuristic's BLOCK_C
        extra["BLOCK_C"] = c_block(c, config.kwargs["C_SPLIT"])
    values = dict(N=4096, D=d, DG=dg, C=c, DT=d + dg)
    try:
        return compile_kernel(kernel, pointers, scalars, {**consts, **extra}, config, arch,
                              values)
    except Exception as exc:  # noqa: BLE001 - reported to the caller
        return exc


#: Exponentials per key pair in the source of the kernels whose score tile feeds a
#: second product (the backward's float16 row scaling adds a per-row ``exp2``, so its
#: rows get no replication figure; they share bfloat16's layouts).  The joint forward's
#: per-row rescaling factor adds BLOCK_M exponentials per tile, not counted: its figure
#: is 1 + (rows' copies) / BLOCK_N.
_EXPS_PER_PAIR = {"fwd": 1, "fwd_o2": 1, "bwd_dq": 2, "bwd_dkv": 2, "joint_fwd": 1,
                  "joint_dq": 1, "joint_dkv": 1}
#: Kernels whose float16 build scales rows by powers of two (``row_scaled``).
_ROW_SCALED = ("bwd_dq", "bwd_dkv", "joint_dq", "joint_dkv")


def replication(label: str, dtype: str, config, ex2: int) -> float | None:
    """How many times the program computes each score of its tile: exponential
    instructions x threads / (tile pairs x exponentials per pair); 1 when the tile is
    shared out over the threads, 2 or more when Triton's layout gives several warps
    the same scores (``None`` where the count says nothing)."""
    exps = _EXPS_PER_PAIR.get(label)
    if exps is None or (dtype == "fp16" and label in _ROW_SCALED):
        return None
    tile = config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"]
    return ex2 * 32 * config.num_warps / (tile * exps)


def _config_text(config) -> str:
    kw = ", ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{kw}, num_warps={config.num_warps}, num_stages={config.num_stages}"


def _report_case(args) -> list[dict]:
    """Every configuration of every spatial kernel for one (arch, dtype, d, c)."""
    arch, dtype, d, c, defaults_only = args
    rows = []
    for label, kernel, pointers, scalars, consts in spatial_jobs(dtype, d, d, c):
        configs = _configs_for(kernel, dtype, d, d, c, consts, arch)
        for i, config in enumerate(configs[:1] if defaults_only else configs):
            start = time.perf_counter()
            stats = _compile_one(kernel, pointers, scalars, consts, config, arch, (d, d, c))
            row = dict(kernel=label, dtype=dtype, d=d, dg=d, C=c, config=_config_text(config),
                       default=i == 0, arch=arch, precision=consts.get("PREC"),
                       compile_s=round(time.perf_counter() - start, 2))
            if isinstance(stats, Exception):
                row["error"] = f"{type(stats).__name__}: {str(stats)[:300]}"
            else:
                row.update(registers=stats["regs"], spill_bytes=stats["spills"],
                           shared_bytes=stats["shared"], wgmma=stats["wgmma"], ex2=stats["ex2"],
                           replication=replication(label, dtype, config, stats["ex2"]))
            rows.append(row)
    return rows


def static_report(arch: int, dtypes, dims, cs, defaults_only: bool, jobs: int) -> list[dict]:
    """The ``--json`` report (see the module docstring), compiled in ``jobs`` processes."""
    cases = [(arch, dt, d, c, defaults_only) for dt in dtypes for d in dims for c in cs]
    if jobs <= 1:
        parts = [_report_case(case) for case in cases]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            parts = list(pool.map(_report_case, cases))
    return [row for part in parts for row in part]


def report_violations(rows: list[dict]) -> list[str]:
    """What the report must hold: every default configuration compiles, spills nothing
    and fits the architecture's shared memory; on sm_90 the bf16 forward kernels use
    wgmma for d >= 64."""
    bad = []
    for r in rows:
        where = f"{r['kernel']} {r['dtype']} d={r['d']} C={r['C']} [{r['config']}]"
        if not r["default"]:
            continue
        if "error" in r:
            bad.append(f"{where}: does not compile: {r['error']}")
            continue
        if r["spill_bytes"] != 0:
            bad.append(f"{where}: spills {r['spill_bytes']} bytes")
        if r["shared_bytes"] > SMEM_LIMIT.get(r["arch"], 0):
            bad.append(f"{where}: needs {r['shared_bytes']} bytes of shared memory")
        if (r["arch"] == 90 and r["dtype"] == "bf16" and "fwd" in r["kernel"] and r["d"] >= 64
                and r["wgmma"] == 0):
            bad.append(f"{where}: no wgmma")
    return bad


def main(argv=None) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET to compile for a GPU target", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90", help="comma-separated, e.g. 90,80")
    parser.add_argument("--op", choices=("spatial", "channel", "both"), default="both")
    parser.add_argument("--dims", default="256,256,256", help="d,dg,C")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--all-configs", action="store_true")
    parser.add_argument("--json", help="write the static report (spatial kernels) here")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32")
    parser.add_argument("--dims-list", default="32,64,128,256", help="d = dg values")
    parser.add_argument("--c-list", default="256,512")
    parser.add_argument("--defaults-only", action="store_true")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    archs = [int(a) for a in args.arch.split(",")]
    if args.json:
        start = time.perf_counter()
        rows = []
        for arch in archs:
            rows += static_report(arch, args.dtypes.split(","),
                                  [int(x) for x in args.dims_list.split(",")],
                                  [int(x) for x in args.c_list.split(",")],
                                  args.defaults_only, args.jobs)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        bad = report_violations(rows)
        print(f"{len(rows)} kernels compiled in {time.perf_counter() - start:.0f} s "
              f"({args.jobs} processes); {len(bad)} violations", flush=True)
        for line in bad:
            print("  " + line)
        return 1 if bad else 0
    dims = tuple(int(x) for x in args.dims.split(","))
    failed = 0
    for arch in archs:
        for op in (("spatial", "channel") if args.op == "both" else (args.op,)):
            failed += _text_report(arch, op, dims, args.all_configs, args.dtype)
    return 1 if failed else 0


def _text_report(arch, op, dims, all_configs, dtype) -> int:
    failed = 0
    for label, config, stats in run(arch, op, dims, all_configs, dtype):
        head = f"{op:8s} {label:24s} sm{arch} {config}"
        if isinstance(stats, Exception):
            failed += 1
            print(f"{head} FAILED {type(stats).__name__}: {str(stats)[:400]}", flush=True)
        else:
            print(f"{head} shared={stats['shared']} regs={stats['regs']} "
                  f"spills={stats['spills']} wgmma={stats['wgmma']}", flush=True)
    return failed


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's ggnet_fast
    sys.exit(main())
