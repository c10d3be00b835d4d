"""The exported ONNX graph in onnxruntime (CPU) against PyTorch with the fused ``cpu`` backend.

Latency (``-k latency``): GG-Net, ``paper`` preset (product form, GGB at stride 8: N =
32x32 positions at 256x256), random weights, batch 1, 256x256, float32, inference
(``final_only=True``), backbones ResNet-18 and ResNeXt-101 32x8d
(``GGNET_BENCH_EXPORT_BACKBONES`` overrides, comma-separated).  Each backbone is exported
once (``ggnet_fast.export.export_onnx``, dynamic shapes); then ``onnxruntime`` (CPU
execution provider, ``intra_op_num_threads`` = the thread count) and PyTorch
(``torch.no_grad``, ``backend="cpu"``) are timed, one warm-up call first.

Peak memory of the product form (``-k memory``): the ONNX translation materialises the
N x N score maps the fused kernels stream over.  One ``GuidedNonLocal(256, combine=
"product")`` (d = dg = C = 256, as in GG-Net) at feature maps 32x32, 64x64 and 128x128
(N = 1024 to 16384; one N x N float32 map is 4 MiB to 1 GiB), batch 1, forward: the
exported graph in onnxruntime against the ``cpu`` backend in PyTorch, each in a fresh
subprocess (this file run as a script): the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) during the first call, minus the resident set before it (the
session / module already built, so weights are not counted; onnxruntime's arena grows
during the call and is counted).  A case whose estimate (6 N x N maps) exceeds
``MemAvailable`` is skipped.

``GGNET_BENCH_THREADS`` (default 2) and ``GGNET_BENCH_ROUNDS`` (default 3) as in
``test_bench_cpu.py``.

    cat /proc/loadavg; OMP_NUM_THREADS=2 pytest benchmarks/test_bench_export.py \\
        --benchmark-only --benchmark-json=export.json

Results quoted in docs/export.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from ggnet_fast.backends import unavailable_reason

ort = pytest.importorskip("onnxruntime")

SIZE, BATCH = 256, 1
BACKBONES = tuple(os.environ.get("GGNET_BENCH_EXPORT_BACKBONES",
                                 "resnet18,resnext101_32x8d").split(","))
MEMORY_SIDES = (32, 64, 128)
CHANNELS = 256
ROUNDS = int(os.environ.get("GGNET_BENCH_ROUNDS", "3"))
THREADS = int(os.environ.get("GGNET_BENCH_THREADS", max(1, min(2, os.cpu_count() or 1))))

pytestmark = pytest.mark.skipif(
    unavailable_reason("cpu") is not None,
    reason=f"cpu backend unavailable: {unavailable_reason('cpu')}")


def _session(path: str):
    from ggnet_fast.export import onnxruntime_session

    return onnxruntime_session(path, threads=THREADS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{backbone: (model, onnx path, export seconds)}``, exported on first use."""
    cache: dict = {}

    def get(backbone: str):
        if backbone not in cache:
            from ggnet_fast.export import export_onnx
            from ggnet_fast.models import build_ggnet

            torch.manual_seed(0)
            model = build_ggnet(preset="paper", variant="full", backbone=backbone,
                                backend="cpu").eval()
            path = str(tmp_path_factory.mktemp("export") / f"ggnet_{backbone}.onnx")
            start = time.perf_counter()
            export_onnx(model, path, torch.randn(BATCH, 3, SIZE, SIZE))
            cache[backbone] = (model, path, time.perf_counter() - start)
        return cache[backbone]

    return get


@pytest.mark.parametrize("provider", ["onnxruntime", "torch-cpu"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_ggnet_latency(benchmark, exported, backbone, provider):
    model, path, export_s = exported(backbone)
    torch.set_num_threads(THREADS)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    if provider == "onnxruntime":
        session = _session(path)
        feed = {session.get_inputs()[0].name: x.numpy()}

        def call():
            return session.run(None, feed)
    else:
        def call():
            with torch.no_grad():
                return model(x, final_only=True)

    call()  # warm-up: arena / oneDNN primitives outside the measurement
    benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({
        "device": "cpu", "model": "ggnet", "preset": "paper", "backbone": backbone,
        "provider": provider, "B": BATCH, "H": SIZE, "W": SIZE, "ggb_positions": (SIZE // 8) ** 2,
        "threads": THREADS, "export_seconds": round(export_s, 1),
        "onnx_bytes": os.path.getsize(path), "dtype": "float32",
        "torch": torch.__version__, "onnxruntime": ort.__version__,
    })


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_in_subprocess(side: int, provider: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, __file__, provider, str(side)], env=env,
                          capture_output=True, text=True, timeout=1800,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("provider", ["onnxruntime", "torch-cpu"])
@pytest.mark.parametrize("side", MEMORY_SIDES)
def test_product_form_peak_memory(benchmark, side, provider):
    n = side * side
    estimate = 6 * n * n * 4
    available = _mem_available()
    if provider == "onnxruntime" and available is not None and estimate > available:
        pytest.skip(f"N = {side}x{side}: ~{estimate / 2**30:.0f} GiB of N x N maps "
                    f"> MemAvailable {available / 2**30:.1f} GiB")
    result = benchmark.pedantic(peak_in_subprocess, args=(side, provider), rounds=1,
                                iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({
        "device": "cpu", "op": "GuidedNonLocal product", "provider": provider,
        "H": side, "W": side, "N": n, "C": CHANNELS, "d": CHANNELS, "B": 1,
        "nxn_map_mib": round(n * n * 4 / 2**20, 1), "threads": THREADS, **result})


# -- child processes -------------------------------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _measure(fn) -> tuple[int, float]:
    """(peak extra bytes, seconds) of the first call of ``fn``."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _rss_kb("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return max(0, (_rss_kb("VmHWM") - before) * 1024), seconds


def _memory_child(provider: str, side: int) -> None:
    from ggnet_fast.export import export_onnx
    from ggnet_fast.nn import GuidedNonLocal

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    block = GuidedNonLocal(CHANNELS, combine="product", residual="fixed", backend="cpu").eval()
    x, guide = torch.randn(1, CHANNELS, side, side), torch.randn(1, CHANNELS, side, side)
    if provider == "onnxruntime":
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "block.onnx")
            # exported at 8x8 (dynamic sizes): the export itself never sees the large N
            export_onnx(block, path, (x[..., :8, :8], guide[..., :8, :8]))
            session = _session(path)
            names = [i.name for i in session.get_inputs()]
            feed = dict(zip(names, (x.numpy(), guide.numpy())))
            del block
            harness_free()
            peak, seconds = _measure(lambda: session.run(None, feed))
    else:
        harness_free()

        def call():
            with torch.no_grad():
                block(x, guide)

        peak, seconds = _measure(call)
    print(json.dumps({"peak_extra_bytes": peak, "peak_extra_mib": round(peak / 2**20, 1),
                      "first_call_seconds": round(seconds, 3)}))


def harness_free() -> None:
    """Give glibc's cached free heap back before the baseline (as test_bench_model.py)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


if __name__ == "__main__":
    _memory_child(sys.argv[1], int(sys.argv[2]))
