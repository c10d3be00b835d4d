"""One training step of GG-Net's released configuration: time and peak memory per backend.

The released configuration runs the global guidance block at stride 4: at a 256x256
input that is N = 64x64 = 4096 positions, and an eager (materialising) attention holds
several B x N x N float32 maps (64 MiB each per image) for the backward.  The fused
backends keep O(N) per row.  Cases, each a full step (forward, Eq. 6 loss, backward,
SGD) of ``build_ggnet(preset="released", variant="full")`` at batch 4, 256x256, float32:

* ``reference``        - materialising attention, element-wise combine;
* ``reference-matmul`` - exactly the released code (``bmm(S_x, S_g)``, O(N^3));
* every fused backend that runs here (``cpu`` on the CPU; ``triton``/``cuda`` on a GPU),
  element-wise combine (the matrix-product combine has no streaming form).

Backbone: ResNeXt-101 32x8d on a GPU, ResNet-18 on the CPU so the run takes minutes
(override with ``GGNET_BENCH_BACKBONE``).  Peak memory (``extra_info["peak_extra_bytes"]``)
is measured by ``harness.peak_extra_bytes``: CUDA ``max_memory_allocated`` or the CPU
process's peak RSS (VmHWM), above what existed before the step (model, optimiser state;
on the CPU after ``malloc_trim`` so that cached free heap is not counted as "before").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

import pytest
import torch

import harness
from ggnet_fast.backends import registry
from ggnet_fast.losses import GGNetLoss
from ggnet_fast.models import build_ggnet

DEV = harness.device()
ON_GPU = DEV.type == "cuda"
BACKBONE = os.environ.get("GGNET_BENCH_BACKBONE", "resnext101_32x8d" if ON_GPU else "resnet18")
BATCH, SIZE = 4, 256


def _fused_backends() -> list[str]:
    options = {"combine": "product", "stabilize": None, "scale": None,
               "out_dtype": torch.float32, "shape": {}}
    names = []
    for name in registry.available_backends():
        if name in ("reference", "eager"):
            continue
        module = registry._load(name)
        if all(module.unsupported(op, DEV.type, torch.float32, options) is None
               for op in ("spatial", "channel")):
            names.append(name)
    return names


CASES = ["reference", "reference-matmul"] + _fused_backends()


def _release_free_heap() -> None:
    """Give glibc's cached free heap back to the OS, so the CPU peak-RSS baseline taken
    just before the step does not already contain memory the step will reuse."""
    if ON_GPU:
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _peak(step):
    _release_free_heap()
    return harness.peak_extra_bytes(step, DEV)


@pytest.mark.parametrize("case", CASES)
def test_released_training_step(benchmark, case):
    backend = case.split("-")[0]
    combine = "matmul" if case.endswith("matmul") else "product"
    torch.manual_seed(0)
    model = build_ggnet(preset="released", variant="full", backbone=BACKBONE, backend=backend,
                        spatial_combine=combine).to(DEV).train()
    loss_fn = GGNetLoss("released")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    images = torch.randn(BATCH, 3, SIZE, SIZE, device=DEV)
    masks = torch.zeros(BATCH, 1, SIZE, SIZE, device=DEV)
    masks[:, :, SIZE // 4: 3 * SIZE // 4, SIZE // 3: 2 * SIZE // 3] = 1

    def step():
        opt.zero_grad(set_to_none=True)
        total = loss_fn(model(images), masks)
        total.backward()
        opt.step()
        harness.synchronize(DEV)

    if not benchmark.disabled:   # --benchmark-disable (CI): one untimed step is enough
        step()  # optimiser state, compilation / autotuning outside the measurement
    peaks = []
    benchmark.pedantic(lambda: peaks.append(_peak(step)),
                       rounds=3 if ON_GPU else 1, iterations=1, warmup_rounds=0)
    n = (SIZE // 4) ** 2
    peak = max((p for p in peaks if p is not None), default=None)
    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name() if ON_GPU else "cpu",
        "model": "ggnet", "preset": "released", "variant": "full", "backbone": BACKBONE,
        "provider": case, "spatial_combine": combine, "B": BATCH, "H": SIZE, "W": SIZE,
        "ggb_positions": n, "nxn_map_bytes": BATCH * n * n * 4, "dtype": "float32",
        "peak_extra_bytes": peak,
        "peak_extra_mib": None if peak is None else round(peak / 2**20, 1),
        "torch": torch.__version__,
    })
