"""benchmarks/roofline.py (docs/roofline.md): the model describes the tiles that run.

The model reads each kernel's default tiles from ``tile_policy.default_tiles`` and
the measured replication from the committed static report; here both must agree with
that report (compiled by benchmarks/triton_static.py, checked by
tests/backends/triton/test_triton_aot.py), and the document's table must be
the script's output.
"""
import json
import os
import subprocess
import sys

import torch

from ggnet_fast.backends.triton.tile_policy import default_tiles, joint_default_tiles
import repo_paths

ROOT = str(repo_paths.ROOT)
REPORT = os.path.join(ROOT, "benchmarks", "results", "triton_static_sm90.json")
KERNELS = {"fwd_lse": ("lse", False), "fwd": ("fwd", False), "fwd_o2": ("fwd", True),
           "bwd_dq": ("dq", False), "bwd_dkv": ("dkv", False)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


JOINT_KERNELS = {"joint_fwd": "fwd", "joint_dq": "dq", "joint_dkv": "dkv"}


def test_default_tiles_are_the_reports_defaults():
    rows = [r for r in json.load(open(REPORT)) if r["default"]]
    assert len(rows) == 192  # 8 kernels x 3 dtypes x d in {32, 64, 128, 256} x C in {256, 512}
    for r in rows:
        if r["kernel"] in JOINT_KERNELS:
            tiles = joint_default_tiles(JOINT_KERNELS[r["kernel"]], r["d"], r["dg"], r["C"],
                                        DTYPES[r["dtype"]])
        else:
            kernel, save_o2 = KERNELS[r["kernel"]]
            tiles = default_tiles(kernel, r["d"], r["dg"], r["C"], DTYPES[r["dtype"]], save_o2)
        assert ", ".join(f"{k}={v}" for k, v in tiles.items()) == r["config"], r


def test_document_table_is_the_scripts_output():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "roofline.py")],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 2 + 2 * 2 * (3 + 5)  # header + (d, N) x (fwd: 2 + total, train: 4 + total)
    doc = open(os.path.join(ROOT, "docs", "roofline.md")).read()
    assert "\n".join(lines) in doc, "regenerate the table: python benchmarks/roofline.py"
