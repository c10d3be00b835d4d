"""Build script for ggnet_fast.

One compiled extension, ``ggnet_fast._C``, holds the C++ CPU kernels
(``csrc/cpu/``), the shared torch-op bindings (``csrc/*.cpp``) and, when a CUDA
toolchain is used, the CUDA kernels (``csrc/cuda/*.cu``).

Environment switches
--------------------
GGNET_CUDA   ``0``: never compile CUDA sources; ``1``: compile them and fail loudly
             if that is impossible; unset: compile them when a CUDA toolchain
             (nvcc under CUDA_HOME) and a CUDA build of torch are found.
GGNET_CPU_EXT  ``0`` skips the compiled extension entirely (pure-Python install:
             only the ``reference``/``eager``/``triton`` backends).
TORCH_CUDA_ARCH_LIST  defaults to ``8.0;9.0+PTX`` when no GPU is visible.

Always install with ``pip install --no-build-isolation -e .`` so the extension
is compiled against the torch already in the environment.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    if value not in ("0", "1"):
        sys.exit(f"setup.py: {name} must be '0' or '1', got {value!r}")
    return value


def _cuda_toolchain_reason() -> str | None:
    """Return None when CUDA sources can be compiled, else the reason why not."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not cuda_home:
        for candidate in ("/usr/local/cuda",):
            if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
                cuda_home = candidate
                break
    if not cuda_home and shutil.which("nvcc"):
        cuda_home = os.path.dirname(os.path.dirname(os.path.realpath(shutil.which("nvcc"))))
    if not cuda_home or not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        return "no nvcc found (set CUDA_HOME)"
    # torch.utils.cpp_extension reads CUDA_HOME at import time.
    os.environ["CUDA_HOME"] = cuda_home
    return None


def _extensions():
    if _flag("GGNET_CPU_EXT") == "0":
        return [], {}
    cpu_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    if not cpu_sources:
        return [], {}

    want_cuda = _flag("GGNET_CUDA")
    use_cuda = False
    if want_cuda != "0" and cuda_sources:
        reason = _cuda_toolchain_reason()
        if reason is None:
            use_cuda = True
        elif want_cuda == "1":
            sys.exit(f"setup.py: GGNET_CUDA=1 but CUDA sources cannot be built: {reason}")
        else:
            print(f"setup.py: building without CUDA ({reason})", file=sys.stderr)
    elif want_cuda == "1":
        sys.exit("setup.py: GGNET_CUDA=1 but there are no CUDA sources under csrc/cuda/")

    import torch
    from torch.utils import cpp_extension

    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # -ldl: csrc/cpu/tile_gemm.cpp uses dlsym (part of libc from glibc 2.34 on).
    link_args = [*openmp, "-ldl"] if sys.platform.startswith("linux") else openmp
    # torch >= 2.10 headers need C++20; our own sources are C++17-clean.
    cxx_flags = ["-O3", "-std=c++20", *openmp]
    # GGNET_PYTHON_MODULE: compile csrc/python_module.cpp's PyInit__C (the CMake
    # library for C++ users leaves it out and needs no Python).
    define_macros = [("GGNET_PYTHON_MODULE", "1")]
    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        define_macros.append(("GGNET_WITH_CUDA", "1"))
        ext = cpp_extension.CUDAExtension(
            "ggnet_fast._C",
            cpu_sources + cuda_sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=define_macros,
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"],
            },
            extra_link_args=link_args,
        )
    else:
        ext = cpp_extension.CppExtension(
            "ggnet_fast._C",
            cpu_sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_args,
        )
    os.environ.setdefault("MAX_JOBS", "2")
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

# Optional extras, pinned to versions the package registry serves (checked 2026-12-07).
INTEGRATIONS = ["segmentation-models-pytorch==0.6.0", "timm==1.0.31"]   # ggnet_fast.integrations
EXPORT = ["onnx==1.23.2", "onnxruntime==1.32.0", "onnxscript==0.7.2"]   # ggnet export
LINT = ["ruff==0.17.6", "clang-format==23.1.5"]                         # .ci/run's checks

setup(
    name="ggnet_fast",
    version="0.1.0",
    description="Fused guided non-local attention kernels and a complete GG-Net "
    "breast-ultrasound lesion segmentation package",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["ggnet_fast", "ggnet_fast.*"]),
    # torch/torchvision are pinned in the README's set-up command, not here: the
    # package must install with --no-deps against whatever CUDA build a GPU box has.
    install_requires=["torch>=2.4", "torchvision>=0.19", "numpy>=1.24"],
    extras_require={
        "triton": ["triton>=3.0"],
        "pipeline": [
            "scipy>=1.10",
            "opencv-python-headless>=4.8",
            "tqdm>=4.60",
            "pillow>=9",
            "pydensecrf2>=1.1",
            "matplotlib>=3.7",     # ggnet compare's figure
        ],
        "test": [
            "pytest>=7",
            "pytest-benchmark>=4",
            "expecttest",
            "scipy>=1.10",
            "opencv-python-headless>=4.8",
            "tqdm>=4.60",
            "pillow>=9",
            "pydensecrf2>=1.1",
            "monai>=1.3",          # independent Hausdorff cross-check in tests/test_metrics.py
            "matplotlib>=3.7",
            *INTEGRATIONS,         # the retrofit and export tests run in CI
            *EXPORT,
            *LINT,
        ],
        "integrations": INTEGRATIONS,
        "export": EXPORT,
        "lint": LINT,
    },
    entry_points={"console_scripts": ["ggnet=ggnet_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
