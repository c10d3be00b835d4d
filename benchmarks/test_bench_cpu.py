"""CPU benchmarks of the fused ``cpu`` backend (issues 7 and 14), float32, batch 1, C = 256.

Speed: spatial forward (under no_grad) and forward+backward at N = 32x32, 64x64, 96x96
with d = dg = 32 and 256, for ``cpu`` against the released code's formula in eager
PyTorch (``eager``) and under ``torch.compile`` (``compile``, compiled afresh for each
case).  ``cpu-blas`` is the same kernel with its tile products forced onto ATen's BLAS
(``GGNET_CPU_GEMM=blas``, the library eager and compile use) instead of oneDNN, to show
how much of the gain is the fused algorithm and how much the GEMM library.

Peak memory: one fresh subprocess per case (this file run as a script), measured by the
kernel as the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after a warm-up call, minus the resident set before the
measured call; see ``harness.peak_extra_bytes``).  ``resource.getrusage`` max RSS is
not used because a child started by vfork+exec inherits the parent's high-water mark.
Big buffers are forced onto mmap (``MALLOC_MMAP_THRESHOLD_``) so that memory freed
after the warm-up is returned to the system and counted again.  Cases: the same sizes
(forward and forward+backward, d = 32) and N = 128x128 forward.

GEMM rate (``-k gemm_rate``): the machine's float32 GEMM rate with the same threads, for
quoting each fused pass as a fraction of it: ``torch.mm`` at 4096 x 256 x 4096 (ATen's
BLAS, what eager and compile use), and oneDNN's float32 matmul on the kernels' tile shape
128 x 256 x 4096, one single-threaded product stream per thread (as the kernels run
their tiles).  Each speed case records ``gflop``, the flops the fused kernel executes
(:func:`executed_flops`).

Joint softmax (``-k joint``, issue 20): ``combine="joint"`` on the fused ``cpu`` kernels
against the ``sdpa`` backend and eager PyTorch, float32 at N = 64x64 (d = dg = 32 and
128) and 128x128 (d = 32), bfloat16 at 64x64; peak memory of cpu and sdpa at 64x64 and
128x128, forward and forward+backward.

GG-Net training step (``-k ggnet_train``): ResNet-18 GG-Net (random weights), 256x256,
batch 4, SGD, the GGB at stride 4 (N = 64x64) and 8 (N = 32x32), ``cpu`` against
``reference``: median step time (wall, and CPU time of the process, which a loaded
machine inflates less) and peak extra memory, one fresh subprocess per case.

``GGNET_BENCH_THREADS`` overrides the thread count (default: 2, or 1 on a 1-core machine);
``--benchmark-timer=time.process_time`` times the in-process cases in CPU time.

    pytest benchmarks/test_bench_cpu.py --benchmark-only --benchmark-json=cpu.json
    GGNET_BENCH_ROUNDS=1 pytest benchmarks/test_bench_cpu.py -k "128"   # quicker

Results quoted in docs/cpu_backend.md.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

import pytest
import torch

import harness
from ggnet_fast.backends import unavailable_reason

BATCH, C = 1, 256
SIDES = (32, 64, 96)
DS = (32, 256)
PROVIDERS = ("cpu", "eager", "compile")
SPEED_PROVIDERS = ("cpu", "cpu-blas", "eager", "compile")
ROUNDS = int(os.environ.get("GGNET_BENCH_ROUNDS", "3"))
THREADS = int(os.environ.get("GGNET_BENCH_THREADS", max(1, min(2, os.cpu_count() or 1))))

pytestmark = pytest.mark.skipif(
    unavailable_reason("cpu") is not None,
    reason=f"cpu backend unavailable: {unavailable_reason('cpu')}")


def make_inputs(n: int, d: int, grad: bool, dtype: torch.dtype = torch.float32):
    """theta, phi [B,N,d], eta, rho [B,N,d], mu [B,N,C], scaled like trained projections."""
    scale = d ** -0.25
    shapes = [(BATCH, n, d)] * 4 + [(BATCH, n, C)]
    return [(s * torch.randn(shape)).to(dtype).requires_grad_(grad)
            for shape, s in zip(shapes, [scale] * 4 + [1.0])]


def executed_flops(n: int, d: int, mode: str) -> int:
    """Flops the fused kernel executes with whole-row strips (N <= 21845), dg = d:
    forward 2N^2 (2d + C) (each score product once, the value product once); the backward
    adds 2N^2 (3 (2d) + 2C) (scores, ds = do mu^T, dmu, and four gradient products)."""
    k, n2 = 2 * d, n * n
    forward = 2 * n2 * (k + C)
    return forward + (2 * n2 * (3 * k + 2 * C) if mode == "fwdbwd" else 0)


def provider_fn(provider: str):
    """The spatial operator a provider name runs: ``cpu-blas`` is ``cpu`` (with BLAS tile
    products), ``X-joint`` is backend or baseline ``X`` with ``combine="joint"``."""
    if provider.endswith("-joint"):
        return harness.op_fn("spatial-joint", provider[:-len("-joint")])
    return harness.spatial_fn("cpu" if provider == "cpu-blas" else provider)


def make_call(provider: str, n: int, d: int, mode: str, dtype: torch.dtype = torch.float32):
    """A no-argument callable running one forward (no_grad) or forward+backward."""
    fn = provider_fn(provider)
    backward = mode == "fwdbwd"
    inputs = make_inputs(n, d, backward, dtype)
    dout = torch.randn(BATCH, n, C, dtype=dtype)

    def call():
        if backward:
            for x in inputs:
                x.grad = None
            fn(*inputs).backward(dout)
        else:
            with torch.no_grad():
                fn(*inputs)

    return call


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("provider", SPEED_PROVIDERS)
@pytest.mark.parametrize("d", DS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("side", SIDES, ids=lambda s: f"N{s}x{s}")
def test_spatial_cpu_speed(benchmark, monkeypatch, side, d, provider, mode):
    torch.set_num_threads(THREADS)
    if provider == "cpu-blas":  # read by the kernel on every call
        monkeypatch.setenv("GGNET_CPU_GEMM", "blas")
    call = make_call(provider, side * side, d, mode)
    benchmark.extra_info.update({"provider": provider, "N": side * side, "side": side, "d": d,
                                 "C": C, "mode": mode, "threads": THREADS,
                                 "gflop": executed_flops(side * side, d, mode) / 1e9,
                                 "torch": torch.__version__})
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    if provider.startswith("cpu"):  # the library the calls above used
        benchmark.extra_info["gemm"] = torch.ops.ggnet_fast.spatial_cpu_gemm(torch.zeros(1))


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("d", DS, ids=lambda d: f"d{d}")
def test_spatial_cpu_speed_bf16(benchmark, d, provider, mode):
    """bfloat16 inputs (what autocast's 1x1 projections produce) at N = 64x64: ``cpu``
    (float32 tile products, float32 output) against the formula run in bfloat16 by eager
    and compile (bfloat16 output, which rounds the modulation away)."""
    torch.set_num_threads(THREADS)
    call = make_call(provider, 64 * 64, d, mode, torch.bfloat16)
    benchmark.extra_info.update({"provider": provider, "N": 64 * 64, "side": 64, "d": d,
                                 "C": C, "mode": mode, "threads": THREADS, "dtype": "bf16",
                                 "gflop": executed_flops(64 * 64, d, mode) / 1e9})
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=1, iterations=1)


def test_bf16_value_product_accuracy(benchmark):
    """Why the kernels keep float32 tile products for 16-bit inputs: the error of the
    modulation delta (relative, against float64) at N = 64x64, d = 32, C = 256 with
    bf16-rounded inputs and mu offset by 0.5, when the value product sum_j e_ij (mu_j - m)
    runs in float32, with bf16 operands and float32 accumulation (a bf16 GEMM with a float32
    output), or with a bf16 output as well (oneDNN's bf16 matmul through ATen), for
    guidance that agrees with the features and for independent guidance."""
    def errors(agree: bool) -> dict:
        n, d = 64 * 64, 32
        x = [d ** -0.25 * torch.randn(n, d, dtype=torch.float64) for _ in range(4)]
        if agree:
            x[2], x[3] = x[0] + 0.5 * x[2], x[1] + 0.5 * x[3]
        th, ph, et, rh, mu = (t.bfloat16().double()
                              for t in (*x, torch.randn(n, C, dtype=torch.float64) + 0.5))
        e = torch.expm1(torch.softmax(th @ ph.T, -1) * torch.softmax(et @ rh.T, -1))
        scale = 1 / (n + e.sum(-1, keepdim=True))
        mu_c = mu - mu.mean(0, keepdim=True)
        exact = e @ mu_c * scale
        variants = {"float32": (e.float() @ mu_c.float()).double(),
                    "bf16-operands": (e.bfloat16().float() @ mu_c.bfloat16().float()).double(),
                    "bf16-output": (e.bfloat16() @ mu_c.bfloat16()).double()}
        return {f"{'agree' if agree else 'independent'}/{k}":
                float((v * scale - exact).norm() / exact.norm()) for k, v in variants.items()}

    torch.manual_seed(0)
    result = benchmark.pedantic(lambda: {**errors(True), **errors(False)}, rounds=1,
                                iterations=1)
    benchmark.extra_info.update(result)


def _onednn_stream_rate(m: int, k: int, n: int, dtype: torch.dtype = torch.float32,
                        seconds: float = 2.0) -> tuple[float, float]:
    """THREADS threads, each running single-threaded oneDNN products [m, k] @ [k, n] in
    ``dtype`` (``torch.ops.mkldnn._linear_pointwise``) for ``seconds``: (aggregate GFLOP/s
    of wall time, GFLOP per second of process CPU time, i.e. per busy core)."""
    a, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    counts = [0] * THREADS

    def worker(i: int, stop: float) -> None:
        torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
        while time.perf_counter() < stop:
            torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")
            counts[i] += 1

    threads = torch.get_num_threads()
    try:
        worker(0, time.perf_counter() + 0.2)  # warm-up: primitive creation
        counts[0] = 0
        stop = time.perf_counter() + seconds
        pool = [threading.Thread(target=worker, args=(i, stop)) for i in range(THREADS)]
        t0, c0 = time.perf_counter(), time.process_time()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        torch.set_num_threads(threads)
    gflop = sum(counts) * 2 * m * k * n / 1e9
    return gflop / elapsed, gflop / cpu


@pytest.mark.parametrize("library", ["torch.mm", "onednn-tiles", "onednn-bf16-tiles"])
def test_cpu_gemm_rate(benchmark, library):
    """The machine's float32 GEMM rate (GFLOP/s of wall time in extra_info["gflops"]; for
    oneDNN also "gflops_per_core", per second of CPU time, which a loaded machine does not
    deflate); for comparison, oneDNN's bfloat16 rate (bf16 operands and output) on the
    same tile shape.  With ``--benchmark-timer=time.process_time``, "gflops" of torch.mm is
    per second of CPU time too."""
    torch.set_num_threads(THREADS)
    if library == "torch.mm":
        a, b = torch.randn(4096, 256), torch.randn(256, 4096)
        benchmark.pedantic(torch.mm, args=(a, b), rounds=max(ROUNDS, 5), warmup_rounds=1)
        if benchmark.stats is not None:  # None under --benchmark-disable (one untimed call)
            median = benchmark.stats.stats.median
            benchmark.extra_info["gflops"] = 2 * 4096 * 256 * 4096 / median / 1e9
    else:
        if not torch.backends.mkldnn.is_available():
            pytest.skip("torch built without oneDNN")
        dtype = torch.bfloat16 if library == "onednn-bf16-tiles" else torch.float32
        rates = []
        benchmark.pedantic(lambda: rates.append(_onednn_stream_rate(128, 256, 4096, dtype)),
                           rounds=3, iterations=1)
        benchmark.extra_info["gflops"] = statistics.median(r[0] for r in rates)
        benchmark.extra_info["gflops_per_core"] = statistics.median(r[1] for r in rates)
    benchmark.extra_info.update({"library": library, "threads": THREADS})


#: combine="joint" (issue 20): the fused cpu kernels against the sdpa backend (ATen's flash
#: kernel on [theta, eta] . [phi, rho] zero-padded to C) and eager, same sizes and inputs.
JOINT_PROVIDERS = ("cpu-joint", "sdpa-joint", "eager-joint")
JOINT_CASES = [(64, 32), (64, 128), (128, 32)]


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("provider", JOINT_PROVIDERS)
@pytest.mark.parametrize("side,d", JOINT_CASES, ids=[f"N{s}x{s}-d{d}" for s, d in JOINT_CASES])
def test_joint_cpu_speed(benchmark, side, d, provider, mode):
    """``combine="joint"`` at C = 256: every product once over K = d + dg (no padding)."""
    if provider == "eager-joint" and side > 64:
        pytest.skip("eager materialises 4 N x N float32 maps (4 GiB at 128x128)")
    torch.set_num_threads(THREADS)
    call = make_call(provider, side * side, d, mode)
    benchmark.extra_info.update({"provider": provider, "N": side * side, "side": side, "d": d,
                                 "C": C, "mode": mode, "threads": THREADS, "combine": "joint",
                                 "gflop": executed_flops(side * side, d, mode) / 1e9})
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("provider", JOINT_PROVIDERS[:2])
def test_joint_cpu_speed_bf16(benchmark, provider, mode):
    """bfloat16 inputs at N = 64x64, d = dg = 32: cpu (float32 tiles) against sdpa (ATen's
    flash kernel in bfloat16)."""
    torch.set_num_threads(THREADS)
    call = make_call(provider, 64 * 64, 32, mode, torch.bfloat16)
    benchmark.extra_info.update({"provider": provider, "N": 64 * 64, "side": 64, "d": 32,
                                 "C": C, "mode": mode, "threads": THREADS, "dtype": "bf16",
                                 "combine": "joint", "gflop": executed_flops(4096, 32, mode) / 1e9})
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=1, iterations=1)


MEMORY_CASES = ([(s, 32, p, m) for s in SIDES for m in ("fwd", "fwdbwd") for p in PROVIDERS]
                + [(128, 32, p, "fwd") for p in ("cpu", "eager", "reference")]
                + [(s, 32, p, m) for s in (64, 128) for m in ("fwd", "fwdbwd")
                   for p in ("cpu-joint", "sdpa-joint")])


def peak_in_subprocess(side: int, d: int, provider: str, mode: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), provider, str(side), str(d), mode],
        capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("side,d,provider,mode", MEMORY_CASES,
                         ids=lambda v: str(v) if not isinstance(v, int) else f"{v}")
def test_spatial_cpu_peak_memory(benchmark, side, d, provider, mode):
    result = benchmark.pedantic(peak_in_subprocess, args=(side, d, provider, mode), rounds=1,
                                iterations=1)
    benchmark.extra_info.update({"provider": provider, "N": side * side, "side": side, "d": d,
                                 "C": C, "mode": mode, **result})
    assert result["peak_extra_bytes"] is not None


GGNET_CASES = [(stride, backend) for stride in (8, 4) for backend in ("cpu", "reference")]


@pytest.mark.parametrize("stride,backend", GGNET_CASES, ids=lambda v: str(v))
def test_ggnet_inference_256(benchmark, stride, backend):
    """GG-Net (paper preset, ResNeXt-101 32x8d, random weights) on one 256x256 image:
    the GGB at stride 8 (N = 32x32, the paper) or 4 (N = 64x64, the released code)."""
    pytest.importorskip("ggnet_fast.models")
    result = benchmark.pedantic(peak_in_subprocess, args=(stride, 0, f"ggnet:{backend}", "fwd"),
                                rounds=1, iterations=1)
    benchmark.extra_info.update({"backend": backend, "ggb_stride": stride, **result})
    assert result["backends"] == [backend]


TRAIN_CASES = [(stride, backend) for stride in (8, 4) for backend in ("cpu", "reference")]


@pytest.mark.parametrize("stride,backend", TRAIN_CASES, ids=lambda v: str(v))
def test_ggnet_train_step_256(benchmark, stride, backend):
    """One GG-Net training step (ResNet-18, random weights, batch 4 of 256x256, SGD):
    forward, the paper's loss, backward, optimizer step; GGB at stride 8 or 4."""
    pytest.importorskip("ggnet_fast.models")
    result = benchmark.pedantic(peak_in_subprocess, args=(stride, 0, f"train:{backend}", "fwdbwd"),
                                rounds=1, iterations=1)
    benchmark.extra_info.update({"backend": backend, "ggb_stride": stride, **result})
    assert result["backends"] == [backend]


def _train_child(backend: str, stride: int) -> None:
    from ggnet_fast.backends import record_dispatch
    from ggnet_fast.losses import GGNetLoss, make_boundary_targets
    from ggnet_fast.models import build_ggnet

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = build_ggnet(preset="paper", backbone="resnet18", weights=None, ggb_stride=stride,
                        backend=backend).train()
    loss_fn = GGNetLoss("paper")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(4, 3, 256, 256)
    masks = (torch.rand(4, 1, 256, 256) > 0.7).float()
    edges = make_boundary_targets(masks, loss_fn.options["boundary_target"])

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(images), masks, edges).backward()
        opt.step()

    with record_dispatch() as calls:
        step()  # warm-up (also allocates the optimizer state)
    times, cpu_times = [], []
    for _ in range(ROUNDS):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    peak = harness.peak_extra_bytes(step, torch.device("cpu"))
    print(json.dumps({"peak_extra_bytes": peak,
                      "peak_extra_MiB": None if peak is None else round(peak / 2**20, 1),
                      "median_s": statistics.median(times), "min_s": min(times),
                      "median_cpu_s": statistics.median(cpu_times),
                      "backends": sorted({b for _, b in calls})}))


def _ggnet_child(backend: str, stride: int) -> None:
    from ggnet_fast.backends import record_dispatch
    from ggnet_fast.models import build_ggnet

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = build_ggnet(preset="paper", ggb_stride=stride, backend=backend).eval()
    image = torch.randn(1, 3, 256, 256)

    def call():
        with torch.inference_mode():
            model(image)

    with record_dispatch() as calls:
        call()  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    peak = harness.peak_extra_bytes(call, torch.device("cpu"))
    print(json.dumps({"peak_extra_bytes": peak,
                      "peak_extra_MiB": None if peak is None else round(peak / 2**20, 1),
                      "median_s": statistics.median(times), "min_s": min(times),
                      "backends": sorted({b for _, b in calls})}))


def _child(provider: str, side: int, d: int, mode: str) -> None:
    """Run one case in this fresh process and print its peak extra memory as JSON."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    call = make_call(provider, side * side, d, mode)
    call()  # warm-up: compilation, thread pools, BLAS buffers are not the operator's cost
    peak = harness.peak_extra_bytes(call, torch.device("cpu"))
    print(json.dumps({"peak_extra_bytes": peak,
                      "peak_extra_MiB": None if peak is None else round(peak / 2**20, 1)}))


if __name__ == "__main__":
    if sys.argv[1].startswith("ggnet:"):
        _ggnet_child(sys.argv[1].split(":", 1)[1], int(sys.argv[2]))
    elif sys.argv[1].startswith("train:"):
        _train_child(sys.argv[1].split(":", 1)[1], int(sys.argv[2]))
    else:
        _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
