"""Record the training cost of the study's runs in ``timings.csv`` next to this script:

    python docs/results/busi_cv/collect_timings.py RUNS    # RUNS/seed<s>/<method>/fold<k>

One row per fold run: method, seed, fold, wall seconds of the (last) training process
(``summary.json``), the median seconds per step over the logged 10-step intervals
(``train_log.csv``; robust to a stretch shared with another job) and the CPU it ran on.
Rows already in the file (same method, seed, fold) are kept, so the file accumulates
over sessions and machines; nothing else is read by summarize.py.
"""
from __future__ import annotations

import csv
import json
import pathlib
import platform
import sys

HERE = pathlib.Path(__file__).resolve().parent
FIELDS = ["method", "seed", "fold", "wall_s", "median_step_s", "steps", "cpu"]


def cpu() -> str:
    """``model name, family F model M, N cores`` from /proc/cpuinfo (Linux)."""
    info = {}
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    import os
    family, model = info.get("cpu family", "?"), info.get("model", "?")
    core = {"25": "Zen 4" if model.isdigit() and 0x10 <= int(model) <= 0x1F else "Zen 3",
            "26": "Zen 5"}.get(family) if "AMD" in info.get("model name", "") else None
    return (f"{info.get('model name', '?')} ({core + ', ' if core else ''}family {family} "
            f"model {model}), {os.cpu_count()} cores")


def median_step(log: pathlib.Path) -> tuple[float, int]:
    with open(log, newline="", encoding="utf-8") as fh:
        rows = [(int(r["step"]), float(r["time_s"])) for r in csv.DictReader(fh)]
    rates = sorted((t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(rows, rows[1:])
                   if s1 > s0 and t1 > t0)
    return (rates[len(rates) // 2] if rates else float("nan")), (rows[-1][0] if rows else 0)


def collect(runs: pathlib.Path) -> list[dict]:
    found = []
    for summary in sorted(runs.glob("seed*/*/fold*/summary.json")):
        fold_dir = summary.parent
        seed = int(fold_dir.parent.parent.name.removeprefix("seed"))
        step_s, steps = median_step(fold_dir / "train_log.csv")
        found.append({"method": fold_dir.parent.name, "seed": seed,
                      "fold": int(fold_dir.name.removeprefix("fold")),
                      "wall_s": round(json.load(open(summary))["seconds"]),
                      "median_step_s": round(step_s, 4), "steps": steps, "cpu": cpu()})
    return found


def main(runs: str) -> None:
    path = HERE / "timings.csv"
    rows = {}
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            rows = {(r["method"], int(r["seed"]), int(r["fold"])): r for r in csv.DictReader(fh)}
    for row in collect(pathlib.Path(runs)):
        rows.setdefault((row["method"], row["seed"], row["fold"]), row)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0], k[2])))
    print(f"{path}: {len(rows)} runs")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
