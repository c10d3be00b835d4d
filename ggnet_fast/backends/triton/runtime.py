"""Runtime plumbing of the Triton backend: interpreter detection, the autotune switch,
matmul precision, padded tile widths, and the ``triton.autotune`` arguments built from
the tile lists of ``tile_policy.py``.

Under ``TRITON_INTERPRET=1`` (CPU tests) there is exactly one configuration per kernel
with large tiles: the interpreter cannot autotune (its benchmark needs a driver) and its
cost grows with the number of programs and loop iterations, not with FLOPs.  On a GPU
the configurations are autotuned per problem shape; configurations that do not fit
(shared memory / registers) are skipped by the autotuner.
"""
from __future__ import annotations

import os

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

#: ``GGNET_TRITON_AUTOTUNE=0`` (read at import): no autotuning on a GPU; every kernel
#: runs the first configuration of its list for the problem (the ``default`` column of
#: the static report ``benchmarks/triton_static.py --json``).  For correctness runs: no
#: timing launches.
AUTOTUNE = os.environ.get("GGNET_TRITON_AUTOTUNE", "1") not in ("", "0")

#: Smallest tile edge: ``tl.dot`` needs every dimension >= 16 on tensor cores.
MIN_BLOCK = 16


def block(n: int, lo: int = MIN_BLOCK) -> int:
    """Next power of two >= ``n`` and >= ``lo`` (the padded width of a full-width tile)."""
    return max(lo, triton.next_power_of_2(int(n)))


def dot_precision() -> str:
    """``tl.dot`` input precision of every kernel, whatever the input dtype: "tf32".

    Half inputs: exact products (the setting is ignored).  float32 inputs: TF32 products
    whatever ``torch.set_float32_matmul_precision`` says, an explicit rule of this
    backend (docs/triton.md, "float32 policy").  IEEE products ("ieee", what torch uses
    at "highest") and Triton's "tf32x3" both need 1-35 KB of register spills per thread
    and up to 917 KB of shared memory at these tile sizes (sm_90 compile): they cannot
    launch on H100/H200 at d = dg = C = 256.  TF32 costs accuracy: delta and gradient
    errors of ~1e-3 to 5e-3 relative at N = 64x64 (the 16-bit contract, not float32's).
    """
    return "tf32"


def configs(gpu: list[dict], interpret: dict) -> list[triton.Config]:
    """``triton.Config`` list: the single ``interpret`` one under the interpreter.

    Each dict holds the meta-parameters plus ``num_warps`` and ``num_stages``.
    """
    chosen = [interpret] if INTERPRET else gpu
    out = []
    for c in chosen:
        c = dict(c)
        warps, stages = c.pop("num_warps", 4), c.pop("num_stages", 2)
        out.append(triton.Config(c, num_warps=warps, num_stages=stages))
    return out


def target_arch(args: dict) -> int:
    """Compute capability (major * 10 + minor) a launch targets: ``args["ARCH"]`` when
    given (the static report), else that of the first CUDA tensor argument, else 90."""
    if "ARCH" in args:
        return int(args["ARCH"])
    for value in args.values():
        device = getattr(value, "device", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            return 10 * major + minor
    return 90


def chosen_class(lists: dict, pick, args: dict) -> str:
    """The class (key of ``lists``) a launch with ``args`` runs: ``pick(args)``, or its
    ``@sm80`` variant on sm_80-class devices (A100: 163 KB of shared memory, no wgmma)
    when ``lists`` has one (the sm_90 default does not fit there)."""
    name = pick(args)
    return f"{name}@sm80" if target_arch(args) < 90 and f"{name}@sm80" in lists else name


def tuned(lists: dict[str, list[dict]], interpret: dict, pick) -> dict:
    """``triton.autotune`` arguments choosing one configuration list per problem class.

    ``pick(args)`` (all launch arguments by name) names the class (a key of ``lists``;
    ``chosen_class`` then takes its ``@sm80`` variant on sm_80-class devices); the
    autotuner only compiles and times that list's configurations (each compile of a
    d = 256 kernel takes seconds, so the lists stay short), or only its first one, the
    default, with ``GGNET_TRITON_AUTOTUNE=0``.  Under the interpreter there is only
    ``interpret``, and pruning never runs.
    """
    if INTERPRET:
        return {"configs": configs([], interpret)}
    keys, everything = {}, {}
    for name, rows in lists.items():
        cs = configs(rows, interpret)
        keys[name] = [str(c) for c in cs]
        everything.update({str(c): c for c in cs})

    def prune(configs_, named_args, **kwargs):
        args = {**named_args, **kwargs}
        wanted = keys[chosen_class(lists, pick, args)]
        kept = sorted((c for c in configs_ if str(c) in wanted), key=lambda c: wanted.index(str(c)))
        kept = kept or list(configs_)
        return kept if AUTOTUNE else kept[:1]

    return {"configs": list(everything.values()), "prune_configs_by": {"early_config_prune": prune}}


def single(gpu: list[dict], interpret: dict) -> list[triton.Config]:
    """``configs`` for a kernel without size classes: only the first GPU configuration
    with ``GGNET_TRITON_AUTOTUNE=0``."""
    return configs(gpu if AUTOTUNE else gpu[:1], interpret)


def autotune_candidates(kernel, args: dict) -> list[triton.Config]:
    """The configurations ``kernel`` (an autotuned kernel) would time for launch
    arguments ``args`` (by name), default first."""
    prune = getattr(kernel, "early_config_prune", None)
    return prune(kernel.configs, args) if prune is not None else list(kernel.configs)
