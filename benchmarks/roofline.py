"""Roofline model of the Triton spatial kernels (docs/roofline.md): per key pair (i, j),
the tensor-core FLOPs, exponentials (MUFU) and float32 ALU instructions each kernel
executes, and the time each unit would need on an H100/H200 at peak.

    python benchmarks/roofline.py > table.md

The counts follow ``ggnet_fast/backends/triton/spatial_kernels.py`` as written (its
default 16-bit configurations): the inference forward takes C in chunks of 256 (one at
C = 256); the training forward computes each score tile twice at C = 256 (two chunks of
128, or at d + dg > 128 one chunk whose score tile Triton replicates on both
warpgroups).  Each chunk or replica recomputes the score product, p and the weights.
ALU counts are per pair, counted from
the kernel source (each FMA, add, multiply, compare/select, conversion = 1); loads,
address arithmetic and per-row work are left out (O(1/BLOCK) per pair).  A kernel's
predicted time is the slowest unit's (perfect overlap): a lower bound, not a
measurement.  Memory traffic is O(N (d + C)) per row tile and is left out.
"""
from __future__ import annotations

from dataclasses import dataclass

#: H100 SXM / H200 (same SM count and clocks): dense bf16 tensor-core FLOP/s, MUFU
#: exponentials per second (16 per SM per clock, 132 SMs, ~1.83 GHz), float32 ALU
#: instructions per second (128 lanes per SM per clock: an FMA counts as one).
PEAK = {"mma": 989e12, "mufu": 3.9e12, "alu": 30.9e12}

EXPM1 = 7           # expm1_unit_scaled(SHORT): 7 FMAs (Horner, scale folded in)
WEIGHTS = EXPM1 + 5  # _weights: + cvt e, cvt back, add, mul, cvt w


@dataclass
class PairCost:
    mma: float   # FLOPs (2 per multiply-add)
    mufu: float  # exponentials
    alu: float   # float32 instructions

    def seconds(self, pairs: float) -> dict:
        return {unit: pairs * getattr(self, unit) / PEAK[unit] for unit in PEAK}


def chunks(c: int, train: bool) -> int:
    """How often the forward default configuration computes each score tile: C chunks
    of 256 in inference, of 128 (or replicas) in training."""
    return max(1, -(-c // (128 if train else 256)))


def kernel_costs(d: int, dg: int, c: int, train: bool) -> dict[str, PairCost]:
    k = d + dg
    n_c = chunks(c, train)
    cost = {
        # pass 1: a, b (2 MMAs), two online log-sum-exps: mask x2, sub x2, max x2, add x2
        "fwd_lse": PairCost(2 * k, 2, 8),
        # pass 2, per chunk: s (K = d + dg), p = exp(s - lse) (sub, mask), e, L's sum
        # (cvt back + add); value product e @ mu over the chunk's columns
        "fwd": PairCost(n_c * 2 * k + 2 * c, n_c, n_c * (2 + EXPM1 + 1 + 2)),
    }
    if train:
        # o2: w (add, mul, cvt, cvt back, add to q) and w @ mu
        cost["fwd"] = PairCost(n_c * 2 * k + 4 * c, n_c, n_c * (2 + WEIGHTS + 4))
        # dq: a, b, ds = dol mu^T, dtheta, deta; sx, sg (sub, mask, exp each), p,
        # weights, t (FMA, mul), da, db (FMA each), 2 conversions
        cost["bwd_dq"] = PairCost(4 * k + 2 * c, 2, 4 + 1 + WEIGHTS + 2 + 2 + 2)
        # dkv: the same plus dmu = e^T dol (2C)
        cost["bwd_dkv"] = PairCost(4 * k + 4 * c, 2, 4 + 1 + WEIGHTS + 2 + 2 + 2)
    return cost


def table(shapes, batch: int = 4) -> str:
    lines = ["| d = dg | C | N | mode | kernel | MMA us | MUFU us | ALU us | bound | predicted us |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d, c in shapes:
        for side in (64, 128):
            n = side * side
            pairs = batch * n * n
            for train in (False, True):
                total = 0.0
                for name, cost in kernel_costs(d, d, c, train).items():
                    t = cost.seconds(pairs)
                    unit = max(t, key=t.get)
                    total += t[unit]
                    lines.append(f"| {d} | {c} | {side}x{side} | {'fwd+bwd' if train else 'fwd'} "
                                 f"| {name} | {1e6 * t['mma']:.0f} | {1e6 * t['mufu']:.0f} "
                                 f"| {1e6 * t['alu']:.0f} | {unit} | {1e6 * t[unit]:.0f} |")
                lines.append(f"| {d} | {c} | {side}x{side} | {'fwd+bwd' if train else 'fwd'} "
                             f"| **total** | | | | | **{1e6 * total:.0f}** |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table([(32, 256), (256, 256)]), end="")
