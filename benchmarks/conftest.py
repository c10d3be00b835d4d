"""Benchmarks: `pytest benchmarks/ --benchmark-only`.

Sizes follow the device: on a GPU the issue's sizes (B = 4, N = 32x32 .. 128x128,
bf16); on the CPU small ones, so the whole harness runs in minutes.  Results carry
the device name, dtype, sizes and peak memory in ``extra_info``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
