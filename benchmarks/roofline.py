"""Roofline model of the Triton spatial kernels (docs/roofline.md): per key pair (i, j),
the tensor-core FLOPs, exponentials (MUFU) and float32 ALU instructions each kernel
executes, plus the bytes each kernel streams from L2, and the time each unit would need
on an H100/H200 at peak.

    python benchmarks/roofline.py > table.md

The counts follow ``ggnet_fast/backends/triton/spatial_kernels.py`` as written, with the
default tiles of its 16-bit configuration classes (``tile_policy.default_tiles``): how
many rows a program owns, how many C chunks the forward runs (each computes the score
tile again), and how many copies of each score tile a program computes
(``replication``, measured from the compiled code in the committed static report
``benchmarks/results/triton_static_sm90.json``).  ALU counts are per pair, counted from
the kernel source (each FMA, add, multiply, compare/select, conversion = 1); loads,
address arithmetic and per-row work are left out (O(1/BLOCK) per pair).

L2 traffic: every program streams the other side's rows for all N keys (queries), so a
kernel reads B N ceil(N / BLOCK_M) x (bytes per streamed row) from L2 (K, mu, do and
the per-row statistics; the whole working set of a batch element fits the 50 MB L2, so
it is L2, not HBM, bandwidth).  A kernel's predicted time is its slowest unit's
(perfect overlap): a lower bound, not a measurement.
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
from dataclasses import dataclass

REPORT = pathlib.Path(__file__).resolve().parent / "results" / "triton_static_sm90.json"

#: H100 SXM / H200 (same SM count and clocks): dense bf16 tensor-core FLOP/s, MUFU
#: exponentials per second (16 per SM per clock, 132 SMs, ~1.83 GHz), float32 ALU
#: instructions per second (128 lanes per SM per clock: an FMA counts as one), and L2 ->
#: SM bandwidth.  The last is no datasheet figure: ~5.5 TB/s is what published
#: microbenchmarks of H100 SXM read from L2; treat it as +-30%.
PEAK = {"mma": 989e12, "mufu": 3.9e12, "alu": 30.9e12, "l2": 5.5e12}

EXPM1 = 7           # expm1_unit_scaled(SHORT): 7 FMAs (Horner, scale folded in)
WEIGHTS = EXPM1 + 5  # _weights: + cvt e, cvt back, add, mul, cvt w
ELEM = 2            # bytes per bf16 element


@dataclass
class KernelCost:
    mma: float   # FLOPs per pair (2 per multiply-add)
    mufu: float  # exponentials per pair
    alu: float   # float32 instructions per pair
    rows: int    # rows per program (BLOCK_M)
    row_bytes: float  # bytes streamed from L2 per other-side row and program
    copies: float = 1  # score computations per pair (C chunks x replication)

    def seconds(self, batch: int, n: int) -> dict:
        pairs = batch * n * n
        t = {unit: pairs * getattr(self, unit) / PEAK[unit] for unit in ("mma", "mufu", "alu")}
        t["l2"] = batch * n * math.ceil(n / self.rows) * self.row_bytes / PEAK["l2"]
        return t


def _tiles(kernel: str, d: int, dg: int, c: int, train: bool = False) -> dict:
    from ggnet_fast.backends.triton.tile_policy import default_tiles
    return default_tiles(kernel, d, dg, c, save_o2=train)


@functools.lru_cache(maxsize=None)
def _report() -> dict:
    rows = json.loads(REPORT.read_text())
    return {(r["kernel"], r["d"], r["C"]): r for r in rows
            if r["default"] and r["dtype"] == "bf16" and r["d"] == r["dg"]}


def replication(kernel: str, d: int, c: int) -> float:
    """Copies of each score tile in the bf16 default of ``kernel`` (the report's label:
    fwd, fwd_o2, bwd_dq, bwd_dkv) at d = dg, from the committed static report."""
    row = _report().get((kernel, d, c))
    if row is None or row.get("replication") is None:
        raise KeyError(f"{kernel} d={d} C={c}: not in {REPORT.name}; regenerate it "
                       "(python benchmarks/triton_static.py --arch 90 --json ...)")
    return row["replication"]


def score_passes(d: int, dg: int, c: int, train: bool) -> tuple[int, float]:
    """(C chunks, score computations per pair) of the forward default: each chunk
    computes the score tile again, each of its copies too."""
    from ggnet_fast.backends.triton.tile_policy import c_block
    t = _tiles("fwd", d, dg, c, train)
    n_chunks = math.ceil(c / c_block(c, t["C_SPLIT"]))
    return n_chunks, n_chunks * replication("fwd_o2" if train else "fwd", d, c)


def kernel_costs(d: int, dg: int, c: int, train: bool) -> dict[str, KernelCost]:
    k = d + dg
    n_chunks, n_s = score_passes(d, dg, c, train)
    rows = {name: _tiles(name, d, dg, c, train)["BLOCK_M"] for name in ("lse", "fwd", "dq", "dkv")}
    cost = {
        # pass 1: a, b (2 MMAs), two online log-sum-exps: mask x2, sub x2, max x2, add x2;
        # streams phi, rho
        "fwd_lse": KernelCost(2 * k, 2, 8, rows["lse"], ELEM * k),
        # pass 2, per score computation: s (K = d + dg), p = exp(s - lse) (sub, mask), e,
        # L's sum (cvt back + add); value product e @ mu over the chunk's columns; streams
        # phi, rho once per chunk and mu
        "fwd": KernelCost(n_s * 2 * k + 2 * c, n_s, n_s * (2 + EXPM1 + 1 + 2), rows["fwd"],
                          ELEM * (n_chunks * k + c), n_s),
    }
    if train:
        r_q, r_k = replication("bwd_dq", d, c), replication("bwd_dkv", d, c)
        # o2: w (add, mul, cvt, cvt back, add to q) and w @ mu
        cost["fwd"] = KernelCost(n_s * 2 * k + 4 * c, n_s, n_s * (2 + WEIGHTS + 4), rows["fwd"],
                                 ELEM * (n_chunks * k + c), n_s)
        # dq: per score copy a, b, ds = dol mu^T; sx, sg (sub, mask, exp each), p,
        # weights, t (FMA, mul), da, db (FMA each), 2 conversions; once dtheta, deta;
        # streams phi, rho, mu
        cost["bwd_dq"] = KernelCost(r_q * (2 * k + 2 * c) + 2 * k, 2 * r_q,
                                    r_q * (4 + 1 + WEIGHTS + 2 + 2 + 2), rows["dq"],
                                    ELEM * (k + c), r_q)
        # dkv: the same plus dmu = e^T dol (2C) and the exponents' clamps (2 min); streams
        # theta, eta, dol and 4 float32 statistics per query
        cost["bwd_dkv"] = KernelCost(r_k * (2 * k + 2 * c) + 2 * k + 2 * c, 2 * r_k,
                                     r_k * (4 + 1 + WEIGHTS + 2 + 2 + 2 + 2), rows["dkv"],
                                     ELEM * (k + c) + 16, r_k)
    return cost


UNITS = ("mma", "mufu", "alu", "l2")


def table(shapes, batch: int = 4) -> str:
    lines = ["| d = dg | C | N | mode | kernel | rows | copies | MMA us | MUFU us | ALU us "
             "| L2 us | bound | predicted us |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d, c in shapes:
        for side in (64, 128):
            n = side * side
            for train in (False, True):
                mode = "fwd+bwd" if train else "fwd"
                total = 0.0
                for name, cost in kernel_costs(d, d, c, train).items():
                    t = cost.seconds(batch, n)
                    unit = max(t, key=t.get)
                    total += t[unit]
                    times = " | ".join(f"{1e6 * t[u]:.0f}" for u in UNITS)
                    lines.append(f"| {d} | {c} | {side}x{side} | {mode} | {name} | {cost.rows} "
                                 f"| {cost.copies:g} | {times} | {unit} | {1e6 * t[unit]:.0f} |")
                lines.append(f"| {d} | {c} | {side}x{side} | {mode} | **total** | | | | | | | "
                             f"| **{1e6 * total:.0f}** |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table([(32, 256), (256, 256)]), end="")
