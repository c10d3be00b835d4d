"""Static resource report of the CUDA kernels (csrc/cuda/*.cu) from ``nvcc -Xptxas -v``:
per kernel and architecture, registers per thread, spill stores/loads, stack frame and
static shared memory, plus the dynamic shared memory and the blocks per SM of the
tensor-core forward (its layout lives in the launcher, which ptxas does not see).

    python benchmarks/cuda_ptxas.py --arch 90 --json benchmarks/results/cuda_ptxas_sm90.json
    python benchmarks/cuda_ptxas.py --arch 90 --markdown        # the table of docs/cuda_backend.md

Needs only nvcc (no GPU, no torch build): the ``.cu`` files include no torch header.
The flags are those of ``setup.py`` (``-O3 --use_fast_math``).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ("spatial_fwd_scalar.cu", "spatial_fwd_tc.cu", "spatial_bwd_scalar.cu",
           "spatial_bwd_tc.cu", "channel.cu")
NVCC_FLAGS = ["-O3", "-std=c++17", "--use_fast_math"]

#: Register file and shared memory of one SM (sm_80: A100, sm_90: H100/H200).
SM_LIMITS = {"80": {"regs": 65536, "smem": 164 * 1024, "max_warps": 64},
             "90": {"regs": 65536, "smem": 228 * 1024, "max_warps": 64}}

#: Warps per block of the tensor-core forward (spatial_fwd_tc.cu kWarps).
WMMA_WARPS = 8

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes cumulative "
                   r"stack size)?(?:, (\d+) bytes smem)?")


def nvcc_path() -> str | None:
    """nvcc from ``CUDA_HOME``, else the one on PATH, else ``None``."""
    home = os.environ.get("CUDA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda/bin/nvcc"
    return shutil.which("nvcc")


def demangle(names: list[str]) -> list[str]:
    """``c++filt`` names when it exists (the mangled names otherwise)."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines if out.returncode == 0 and len(lines) == len(names) else names


def short_name(demangled: str) -> str:
    """``kernel<args>`` without namespaces and parameter list:
    ``spatial_wmma_kernel<__nv_bfloat16, false, 8>``."""
    head = demangled.replace("(anonymous namespace)::", "").split("(", 1)[0]
    head = re.sub(r"^void ", "", head)
    base, _, targs = head.partition("<")
    base = base.rsplit("::", 1)[-1]
    return f"{base}<{targs}" if targs else base


def parse_ptxas(text: str, source: str) -> list[dict]:
    """Rows of one ``nvcc -Xptxas -v`` log: ``kernel``, ``mangled``, ``source``, ``arch``,
    ``registers``, ``spill_stores``, ``spill_loads``, ``stack_bytes``, ``static_smem``."""
    rows, cur = [], None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = {"mangled": m.group(1), "source": source, "arch": m.group(2),
                   "registers": None, "spill_stores": 0, "spill_loads": 0, "stack_bytes": 0,
                   "static_smem": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur["stack_bytes"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
            continue
        m = _USED.search(line)
        if m:
            cur["registers"] = int(m.group(1))
            cur["static_smem"] = int(m.group(3) or 0)
    for row, name in zip(rows, demangle([r["mangled"] for r in rows])):
        row["kernel"] = short_name(name)
    return rows


def compile_report(arch: str, nvcc: str | None = None) -> list[dict]:
    """Compile every source for ``sm_<arch>`` and return the parsed rows."""
    nvcc = nvcc or nvcc_path()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in SOURCES:
            cmd = [nvcc, *NVCC_FLAGS, f"-I{ROOT / 'csrc'}",
                   f"-gencode=arch=compute_{arch},code=sm_{arch}", "-Xptxas", "-v",
                   "-c", str(ROOT / "csrc" / "cuda" / src), "-o", os.path.join(tmp, src + ".o")]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"nvcc failed on {src}:\n{out.stderr[-3000:]}")
            rows += parse_ptxas(out.stdout + out.stderr, src)
    return rows


def wmma_forward_smem(d: int, dg: int, c: int, stats: bool, elem: int = 2) -> int:
    """Dynamic shared memory (bytes) of ``spatial_wmma_kernel`` (spatial_fwd_tc.cu ``Layout``,
    written out again here because the launcher computes it at run time)."""
    pad16 = lambda x: (x + 15) // 16 * 16  # noqa: E731
    al = lambda b: (b + 127) // 128 * 128  # noqa: E731
    rows, keys, kpad, row_warps, warps = 64, 64, 8, 4, WMMA_WARPS
    ldq, ldg, ldc = pad16(d) + kpad, pad16(dg) + kpad, pad16(c) + kpad
    total = 2 * al(rows * ldq * elem) + 2 * al(rows * ldg * elem)  # qa, ka; qb, kb
    if not stats:
        total += al(keys * ldc * elem) + al(row_warps * 16 * (keys + kpad) * elem)  # mv, e
    return total + al(warps * 2 * 16 * 16 * 4) + al(2 * rows * 4 * 4)  # scr, red


def blocks_per_sm(registers: int, threads: int, smem: int, arch: str) -> int:
    """Resident blocks per SM allowed by registers (allocated per warp in units of 256),
    shared memory (+1 KiB reserved per block) and warps."""
    lim = SM_LIMITS[arch]
    regs_per_warp = -(-registers * 32 // 256) * 256
    by_regs = lim["regs"] // (regs_per_warp * (threads // 32))
    by_smem = lim["smem"] // (smem + 1024) if smem else by_regs
    by_warps = lim["max_warps"] // (threads // 32)
    return min(by_regs, by_smem, by_warps)


def occupancy_rows(rows: list[dict], arch: str) -> list[dict]:
    """The tensor-core forward's shared memory and blocks per SM at the benchmark shapes."""
    regs = {r["kernel"]: r["registers"] for r in rows}
    out = []
    for d, c in ((32, 256), (64, 256), (128, 256), (256, 256)):
        for stats, frag in ((True, 1), (False, 8)):
            name = f"spatial_wmma_kernel<__nv_bfloat16, {'true' if stats else 'false'}, {frag}>"
            if name not in regs:
                continue
            smem = wmma_forward_smem(d, d, c, stats)
            out.append({"kernel": name, "d": d, "dg": d, "C": c, "dynamic_smem": smem,
                        "registers": regs[name],
                        "warps_per_block": WMMA_WARPS,
                        "blocks_per_sm": blocks_per_sm(regs[name], 32 * WMMA_WARPS, smem, arch)})
    return out


def markdown(rows: list[dict], occupancy: list[dict]) -> str:
    lines = ["| source | kernel | registers | spill stores / loads (B) | stack (B) "
             "| static smem (B) |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['source']} | `{r['kernel']}` | {r['registers']} | "
                     f"{r['spill_stores']} / {r['spill_loads']} | {r['stack_bytes']} | "
                     f"{r['static_smem']} |")
    if occupancy:
        lines += ["", "| tensor-core forward | d = dg | C | dynamic smem (KiB) | registers | "
                  f"blocks (x {WMMA_WARPS} warps) per SM |", "|---|---:|---:|---:|---:|---:|"]
        for o in occupancy:
            lines.append(f"| `{o['kernel']}` | {o['d']} | {o['C']} | "
                         f"{o['dynamic_smem'] / 1024:.1f} | {o['registers']} | "
                         f"{o['blocks_per_sm']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="90", choices=sorted(SM_LIMITS),
                        help="compute capability without the dot (default 90)")
    parser.add_argument("--json", help="write the rows as a JSON object to this file")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    rows = compile_report(args.arch)
    occupancy = occupancy_rows(rows, args.arch)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"arch": f"sm_{args.arch}", "nvcc_flags": NVCC_FLAGS, "kernels": rows,
                       "tensor_core_forward": occupancy}, fh, indent=1)
            fh.write("\n")
    if args.markdown or not args.json:
        print(markdown(rows, occupancy), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
