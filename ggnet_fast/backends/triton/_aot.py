"""Compile the backend's kernels for a GPU target without a GPU (a CPU-only check).

The interpreter runs the kernels' *semantics* on the CPU but never lowers them, so a
kernel that the GPU compiler rejects (an unsupported dot shape or dtype mix, a type
error in a branch) would pass every CPU test.  This module lowers each kernel through
Triton's real pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin with the bundled ptxas)
for ``GPUTarget("cuda", arch, 32)`` and reports shared memory, registers and spills.

    python -m ggnet_fast.backends.triton._aot --arch 90,80 [--op spatial|channel]
        [--dims D,DG,C] [--all-configs]

Must run with ``TRITON_INTERPRET`` unset (``@triton.jit`` reads it at definition time).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile


def _jit_function(kernel):
    import triton
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


def _ptxas_stats(ptx: str, arch: int) -> tuple[str, str]:
    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        return "?", "?"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = "sm_90a" if arch == 90 else f"sm_{arch}"
        err = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", src, "-o", src + ".cubin"],
                             capture_output=True, text=True).stderr
    regs = re.findall(r"Used (\d+) registers", err)
    spills = re.findall(r"(\d+) bytes spill stores", err)
    return (regs[-1] if regs else "?"), (spills[-1] if spills else "?")


def compile_kernel(kernel, pointers: dict, scalars: dict, constexprs: dict, config, arch: int):
    """Lower one autotuned kernel with one ``triton.Config``; returns a stats dict."""
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
    compiled = triton.compile(ASTSource(fn, signature, constexprs=consts),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": config.num_warps,
                                       "num_stages": config.num_stages})
    regs, spills = _ptxas_stats(compiled.asm["ptx"], arch)
    return {"kernel": fn.__name__, "shared": compiled.metadata.shared, "regs": regs,
            "spills": spills}


def spatial_jobs(dtype: str, d: int, dg: int, c: int) -> list:
    """(label, kernel, pointer dtypes, scalar types, constexprs) for the spatial kernels."""
    from . import spatial_kernels as sk
    from ._config import block
    scalars = dict(N="i32", D="i32", DG="i32", C="i32", DT="i32")
    io = dict(Q=dtype, K=dtype, MU=dtype)
    f32 = "fp32"
    return [
        ("lse", sk._lse_kernel, dict(Q=dtype, K=dtype, STATS=f32), scalars,
         dict(BLOCK_D=block(d), BLOCK_DG=block(dg), PREC="tf32")),
        ("fwd", sk._fwd_kernel, dict(**io, MUSUM=f32, STATS=f32, O=f32, O2=f32), scalars,
         dict(BLOCK_K=block(d + dg), SAVE_O2=True, PREC="tf32")),
        ("dq", sk._bwd_dq_kernel,
         dict(**io, DOL=f32, STATS=f32, BST=f32, DTH=dtype, DET=dtype), scalars,
         dict(BLOCK_D=block(d), BLOCK_DG=block(dg), BLOCK_C=block(c), R_PASS=False,
              PREC="tf32")),
        ("dkv", sk._bwd_dkv_kernel,
         dict(**io, DOL=f32, DMUB=f32, STATS=f32, BST=f32, DPH=dtype, DRH=dtype, DMU=dtype),
         scalars, dict(BLOCK_D=block(d), BLOCK_DG=block(dg), BLOCK_C=block(c), PREC="tf32")),
    ]


def channel_jobs(dtype: str, c: int) -> list:
    from . import channel_kernels as ck
    from ._config import block
    f32 = "fp32"
    cc = dict(C="i32", scale="fp32")
    cn = dict(C="i32", N="i32")
    strides = dict(C="i32", N="i32", sw1r="i32", sw1k="i32", sw2r="i32", sw2k="i32")
    maps = {n: f32 for n in ("A", "B", "E", "LR", "CR")}
    jobs = [
        ("gram", ck._gram_kernel, dict(X1=dtype, Y1=dtype, X2=dtype, Y2=dtype, OUT1=f32, OUT2=f32),
         cn, dict(TWO=True, PREC="tf32")),
        ("gram_dq", ck._gram_kernel, dict(X1=f32, Y1=dtype, X2=f32, Y2=dtype, OUT1=f32, OUT2=f32),
         cn, dict(TWO=False, PREC="tf32")),
        ("apply_fwd", ck._apply_kernel,
         dict(W1=f32, X1=dtype, W2=f32, X2=dtype, LR=f32, CR=f32, OUT=f32), strides,
         dict(SYM1=False, TWO=False, COLSUM=True, DIV=True, RW_C=True, CW_C=False, XS_L=False,
              PREC="tf32")),
        ("apply_dy", ck._apply_kernel,
         dict(W1=f32, X1=dtype, W2=f32, X2=f32, LR=f32, CR=f32, OUT=f32), strides,
         dict(SYM1=True, TWO=True, COLSUM=True, DIV=False, RW_C=False, CW_C=True, XS_L=True,
              PREC="tf32")),
        ("softmax_bwd", ck._softmax_bwd_kernel,
         {n: f32 for n in ("S1", "D1", "S2", "D2", "O1", "O2")}, cc, dict(BLOCK_C=block(c))),
    ]
    for matmul in (False, True):
        for maxminus in (False, True):
            flags = dict(BLOCK_C=block(c), MATMUL=matmul, MAXMINUS=maxminus, PREC="tf32")
            tag = f"{'matmul' if matmul else 'product'}{'-maxminus' if maxminus else ''}"
            jobs.append((f"map[{tag}]", ck._map_kernel, maps, cc, flags))
            jobs.append((f"map_bwd[{tag}]", ck._map_bwd_kernel,
                         {n: f32 for n in ("A", "B", "EC", "LR", "CR", "DQ", "DA", "DB", "DM0",
                                           "SZ", "SG")}, cc, flags))
    return jobs


def run(arch: int, op: str, dims: tuple[int, int, int], all_configs: bool, dtype: str = "bf16"):
    """Compile every kernel of ``op``; yields ``(label, config, stats or exception)``."""
    from .spatial_kernels import _c_block
    d, dg, c = dims
    jobs = spatial_jobs(dtype, d, dg, c) if op == "spatial" else channel_jobs(dtype, c)
    for job in jobs:
        label, kernel, pointers, scalars, consts = job[:5]
        configs = kernel.configs
        prune = getattr(kernel, "early_config_prune", None)
        if prune is not None:  # the list the autotuner would time for these sizes
            configs = prune(configs, dict(N=4096, D=d, DG=dg, C=c))
        for config in configs if all_configs else configs[:1]:
            extra = {}
            if "C_SPLIT" in config.kwargs:  # the heuristic's BLOCK_C
                extra["BLOCK_C"] = _c_block(c, config.kwargs["C_SPLIT"])
            try:
                stats = compile_kernel(kernel, pointers, scalars, {**consts, **extra}, config, arch)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                stats = exc
            yield label, config, stats


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
    args = parser.parse_args(argv)
    dims = tuple(int(x) for x in args.dims.split(","))
    failed = 0
    for arch in (int(a) for a in args.arch.split(",")):
        for op in (("spatial", "channel") if args.op == "both" else (args.op,)):
            failed += _report(arch, op, dims, args.all_configs, args.dtype)
    return 1 if failed else 0


def _report(arch, op, dims, all_configs, dtype) -> int:
    failed = 0
    for label, config, stats in run(arch, op, dims, all_configs, dtype):
        head = f"{op:8s} {label:24s} sm{arch} {config}"
        if isinstance(stats, Exception):
            failed += 1
            print(f"{head} FAILED {type(stats).__name__}: {str(stats)[:400]}", flush=True)
        else:
            print(f"{head} shared={stats['shared']} regs={stats['regs']} "
                  f"spills={stats['spills']}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
