"""``ggnet bench``: a quick timing of the guided-attention operators on every usable backend
and of one GG-Net forward pass (for careful numbers use ``pytest benchmarks/``)."""
from __future__ import annotations

import time

import torch


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def run_bench(device: str = "cpu", repeats: int = 5) -> list[dict]:
    from .backends import available_backends
    from .ops import guided_channel_attention, guided_spatial_attention

    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    b, n, c = 2, 32 * 32, 256
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = [torch.randn(b, n, c, generator=gen).to(dev, dtype) * 0.1 for _ in range(5)]
    y, g = (torch.randn(b, c, n, generator=gen).to(dev, dtype) * 0.1 for _ in range(2))
    results = []
    print(f"device {dev}, dtype {dtype}, B={b} N={n} C={c}, median of {repeats}")
    for name in available_backends():
        # Both closures are timed within this iteration; the default binds ``name`` explicitly.
        def spatial(name=name):
            return guided_spatial_attention(*x, backend=name)

        def channel(name=name):
            return guided_channel_attention(y, g, scale=1.0 / n, backend=name)

        for op, fn in (("spatial", spatial), ("channel", channel)):
            try:
                with torch.no_grad():
                    t = _time(fn, repeats, dev)
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                print(f"  {op:8s} {name:10s} unsupported: {str(exc).splitlines()[0][:80]}")
                continue
            results.append({"op": op, "backend": name, "ms": t * 1e3})
            print(f"  {op:8s} {name:10s} {t * 1e3:9.2f} ms")
    from .models import build_ggnet
    model = build_ggnet(preset="paper", variant="full", backbone="resnet18").to(dev).eval()
    img = torch.randn(2, 3, 128, 128, generator=gen).to(dev)
    with torch.no_grad():
        t = _time(lambda: model(img, final_only=True), repeats, dev)
    results.append({"op": "ggnet_resnet18_128_fwd_b2", "backend": "auto", "ms": t * 1e3})
    print(f"  GG-Net (ResNet-18) forward, batch 2 at 128x128: {t * 1e3:.1f} ms")
    return results
