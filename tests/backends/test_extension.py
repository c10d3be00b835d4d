"""The compiled extension ggnet_fast._C and the standalone CMake build.

* the module built by ``pip install -e .`` loads and registers every operator with
  the kernels each needs (CPU, Meta, autograd; CUDA when compiled with it);
* the loader explains why it is unavailable when the module cannot be imported;
* ``CMakeLists.txt`` configures and builds against libtorch and its C++ example runs
  (skipped only when cmake is not installed; ~2-3 min on 2 cores).
"""
import os
import shutil
import subprocess

import pytest
import torch

from ggnet_fast.backends import extension
import repo_paths

if os.environ.get("GGNET_CPU_EXT") == "0":
    pytest.skip("installed with GGNET_CPU_EXT=0: no compiled extension", allow_module_level=True)

ROOT = str(repo_paths.ROOT)


def has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"ggnet_fast::{op}", key)


def test_compiled_module_exposes_every_op():
    module = extension.load()
    assert module is not None, extension.unavailable_reason()
    assert extension.unavailable_reason() is None
    assert module.__name__ == "ggnet_fast._C"
    for op in extension.OPS:
        assert hasattr(torch.ops.ggnet_fast, op), op
    for op in ("spatial_fwd", "spatial_bwd"):
        assert has_kernel(op, "CPU") and has_kernel(op, "Meta"), op
    for op in ("spatial", "channel"):
        assert has_kernel(op, "Autograd") and has_kernel(op, "CompositeExplicitAutograd"), op
    for op in ("channel_fwd", "channel_bwd"):
        assert has_kernel(op, "CompositeExplicitAutograd"), op
    assert module.WITH_CUDA in (0, 1)
    if module.WITH_CUDA:
        for op in ("spatial_fwd", "spatial_bwd"):
            assert has_kernel(op, "CUDA"), op
    schema = str(torch.ops.ggnet_fast.spatial_fwd.default._schema)
    assert schema.startswith("ggnet_fast::spatial_fwd(Tensor theta, Tensor phi"), schema


def test_loader_reports_why_the_extension_is_missing(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(extension, "_TRIED", False)
    monkeypatch.setattr(extension, "_MODULE", None)
    monkeypatch.setattr(extension, "_ERROR", None)
    monkeypatch.setattr(extension.importlib, "import_module", missing)
    assert extension.load() is None
    reason = extension.unavailable_reason()
    assert "not built" in reason and "pip install --no-build-isolation -e ." in reason
    assert not extension.has_kernel("spatial_fwd", "CPU")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_builds_library_and_example(tmp_path):
    build = tmp_path / "build"
    prefix = torch.utils.cmake_prefix_path
    env = dict(os.environ)
    configure = subprocess.run(
        ["cmake", "-S", ROOT, "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}"],
        capture_output=True, text=True, env=env)
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    jobs = str(max(1, min(2, os.cpu_count() or 1)))
    built = subprocess.run(["cmake", "--build", str(build), "-j", jobs],
                           capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert any(p.name.startswith("libggnet_fast_ops") for p in build.iterdir())
    run = subprocess.run([str(build / "ggnet_spatial_example")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("OK"), run.stdout + run.stderr
