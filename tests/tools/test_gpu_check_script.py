"""benchmarks/gpu_check.sh --dry-run: the GPU check's plumbing on a CPU machine.

The GPU run itself needs a lent H100/H200; what can break without one is checked here:
the script runs to the end, every step that needs CUDA says it was skipped, the test
selection it would run collects, the results are merged and summarised, and $OUT holds
at most 8 known files.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import repo_paths

ROOT = str(repo_paths.ROOT)
FILES = {"steps.log", "device.txt", "build.log", "tests.log", "tests.xml", "bench.log",
         "bench.json", "bench_table.md"}
BENCH_STEPS = ("bench_joint", "bench_flex_joint", "bench_d32", "bench_d256", "bench_flex")
CUDA_STEPS = ("build", "tests", "matmul", *BENCH_STEPS)


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils timeout")
def test_dry_run_reports_skipped_cuda_steps_and_bundles_at_most_8_files(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = set(os.listdir(tmp_path))
    assert files <= FILES and len(files) <= 8, files
    steps = (tmp_path / "steps.log").read_text()
    for name in CUDA_STEPS:
        assert f"{name}: skipped (dry run: needs CUDA)" in steps, steps
    assert "collect: exit 0" in steps, steps + (tmp_path / "tests.log").read_text()[-3000:]
    for name in BENCH_STEPS:  # the GPU's sizes collect
        assert f"{name}-collect: exit 0" in steps, steps + (tmp_path / "bench.log").read_text()
    assert "done in" in steps
    merged = json.loads((tmp_path / "bench.json").read_text())
    assert merged["benchmarks"] == []
    assert (tmp_path / "bench_table.md").read_text().startswith("Device:")
    assert "torch" in (tmp_path / "device.txt").read_text()
