"""Test configuration shared by every test module.

Without a GPU, Triton kernels run under the interpreter: ``TRITON_INTERPRET`` must be
set before any ``@triton.jit`` function is defined, i.e. before ggnet_fast's Triton
backend is imported, so it is set here at collection time.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


@pytest.fixture
def seed():
    """A fresh random seed per test run (printed on failure), so inputs are not fixed."""
    value = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(value)
    return value
