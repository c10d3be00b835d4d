"""Turn a pytest-benchmark JSON file into the Markdown tables kept in benchmarks/results/.

    python benchmarks/summarize.py results.json [--matmul-tflops 700] > table.md

For each case (operator, sizes, mode) it lists every provider's median time, its
speed-up over the better of the ``eager`` and ``compile`` baselines, its peak extra
memory, and (spatial operator, when FLOPs are recorded) achieved TFLOP/s.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def _case_key(info: dict) -> tuple:
    keys = ("op", "B", "N", "d", "dg", "C", "mode")
    return tuple(info.get(k) for k in keys)


def _fmt_bytes(n) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def summarize(path: str, matmul_tflops: float | None) -> str:
    data = json.load(open(path))
    cases: dict[tuple, dict[str, dict]] = defaultdict(dict)
    device = None
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "op" not in info:
            continue
        device = device or info.get("device")
        cases[_case_key(info)][info["provider"]] = {
            "median": bench["stats"]["median"], "peak": info.get("peak_extra_bytes"),
            "flops": info.get("flops"),
        }
    lines = [f"Device: {device}", ""]
    header = ("| op | B | N | d | dg | C | mode | provider | median ms | vs best baseline "
              "| peak extra | TFLOP/s |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for key in sorted(cases, key=lambda k: tuple(str(x) for x in k)):
        provs = cases[key]
        base = [provs[p]["median"] for p in ("eager", "compile") if p in provs]
        best = min(base) if base else None
        for prov, r in sorted(provs.items(), key=lambda kv: kv[1]["median"]):
            speed = f"{best / r['median']:.2f}x" if best else "n/a"
            tflops = (f"{r['flops'] / r['median'] / 1e12:.1f}" if r["flops"] else "")
            if tflops and matmul_tflops:
                tflops += f" ({100 * r['flops'] / r['median'] / 1e12 / matmul_tflops:.0f}%)"
            cells = [*(str(x) if x is not None else "" for x in key), prov,
                     f"{1e3 * r['median']:.3f}", speed, _fmt_bytes(r["peak"]), tflops]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_path")
    parser.add_argument("--matmul-tflops", type=float, default=None,
                        help="measured dense bf16 matmul rate of the card, for the %% column")
    args = parser.parse_args()
    print(summarize(args.json_path, args.matmul_tflops), end="")


if __name__ == "__main__":
    main()
