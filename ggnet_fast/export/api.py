"""Export a GG-Net, or any model holding the guided attention modules, to a
``torch.export`` program or to ONNX (``docs/export.md``).

``export_program(model, example)`` runs :func:`torch.export.export` on the model's
inference form (GG-Net: ``model(images, final_only=True)``, the final logits) in eval
mode.  ``export_onnx(model, path, example)`` exports that program with the dynamo ONNX
exporter and :func:`~ggnet_fast.export.onnx_ops.translation_table`, so the fused
operators become standard ONNX ops and the file runs in stock onnxruntime.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from ..fileio import atomic_destination
from . import onnx_ops

#: GG-Net's inference outputs: the final logits (the default) or the full
#: :class:`~ggnet_fast.models.GGNetOutput` flattened (logits, side logits, boundaries).
OUTPUTS = ("logits", "all")
#: The smallest opset the translations can be written in (Reduce* take ``axes`` as an input).
MIN_OPSET = onnx_ops.OPSET


class ExportError(RuntimeError):
    """The model cannot be exported as asked (an operator without translation, a bad
    option); the message says which and what to do."""


def _is_ggnet(model: nn.Module) -> bool:
    from ..models.ggnet import GGNet

    return isinstance(model, GGNet)


class GGNetLogits(nn.Module):
    """GG-Net's inference form: ``images [B, 3, H, W] -> logits [B, 1, H, W]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, final_only=True)


def inference_module(model: nn.Module, outputs: str = "logits") -> nn.Module:
    """What is exported: for a GG-Net with ``outputs="logits"`` a :class:`GGNetLogits`
    wrapper, otherwise ``model`` itself (a GG-Net's full output is a registered pytree)."""
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {list(OUTPUTS)}, got {outputs!r}")
    if _is_ggnet(model) and outputs == "logits":
        return GGNetLogits(model)
    return model


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def example_args(model: nn.Module, example_input=None, image_size: int = 256) -> tuple:
    """The positional example inputs as a tuple: ``example_input`` (a tensor or a tuple of
    them), or for a GG-Net without one ``randn(1, 3, image_size, image_size)``."""
    if example_input is None:
        if not _is_ggnet(model):
            raise ValueError(f"example_input is required for a {type(model).__name__} "
                             f"(only a GG-Net has a default: [1, 3, 256, 256])")
        return (torch.randn(1, 3, image_size, image_size, device=_device(model)),)
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input)
    raise TypeError(f"example_input must be a tensor or a tuple of tensors, "
                    f"got {type(example_input).__name__}")


def fixed_size_reason(model: nn.Module) -> str | None:
    """Why ``model``'s spatial size must be fixed in an exported graph (``None`` if it
    need not): a ``GuidedChannelAttention(gram_normalization="positions")`` passes
    ``scale = 1 / (H W)`` to the channel operator as a float argument, which
    ``torch.export`` cannot keep symbolic (the operator's ``float? scale``)."""
    from ..nn import GuidedChannelAttention

    for name, m in model.named_modules():
        if isinstance(m, GuidedChannelAttention) and m.gram_normalization == "positions":
            return (f"{name or type(model).__name__} has gram_normalization='positions' "
                    f"(scale 1/(H W) is a float argument of the channel operator)")
    return None


def dynamic_shapes(args: Sequence[Any], dynamic: bool, spatial: bool = True):
    """``None`` (static), or for every tensor argument its batch dimension and, for an
    image-like ``[B, C, H, W]`` tensor with ``spatial``, ``H`` and ``W`` as
    :data:`torch.export.Dim.AUTO` (the exporter keeps them symbolic where the model
    allows, and unifies the sizes the model requires to be equal, e.g. a feature map and
    its guidance map)."""
    if not dynamic:
        return None
    auto = torch.export.Dim.AUTO
    shapes = []
    for a in args:
        if not isinstance(a, torch.Tensor) or a.dim() == 0:
            shapes.append(None)
        elif a.dim() == 4 and spatial:
            shapes.append({0: auto, 2: auto, 3: auto})
        else:
            shapes.append({0: auto})
    return tuple(shapes)


def _batch_of_two(args: tuple) -> tuple:
    """Batch-1 example tensors repeated to batch 2: ``torch.export`` specialises a size
    of 1 (the "0/1 specialisation"), so a batch-1 example would fix the batch at 1."""
    if not any(isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == 1 for a in args):
        return args
    return tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() > 0
                 and a.shape[0] == 1 else a for a in args)


class _eval_mode:
    """Run the block with ``model.eval()``, restoring every submodule's mode after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = [(m, m.training) for m in model.modules()]

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, training in self.modes:
            m.training = training
        return False


def untranslated_ops(program: torch.export.ExportedProgram) -> list[str]:
    """The ``ggnet_fast::`` operators in ``program``'s graph that have no ONNX translation."""
    found = []
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            target = node.target
            if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
                continue
            if target.namespace == "ggnet_fast" and target._opname not in onnx_ops.TRANSLATED:
                found.append(f"ggnet_fast::{target._opname}")
    return sorted(set(found))


def export_program(model: nn.Module, example=None, *, dynamic: bool = False,
                   outputs: str = "logits", image_size: int = 256
                   ) -> torch.export.ExportedProgram:
    """:func:`torch.export.export` of ``model``'s inference form in eval mode.

    Args:
        model: a GG-Net (exported as ``images -> logits``, or the flattened
            ``GGNetOutput`` with ``outputs="all"``) or any module (e.g. a
            :class:`~ggnet_fast.nn.GuidedNonLocal`, called as ``model(*example)``).
        example: a tensor or a tuple of positional tensors; ``None`` for a GG-Net means
            ``randn(1, 3, image_size, image_size)``.
        dynamic: keep batch and spatial sizes symbolic (see :func:`dynamic_shapes`);
            only the batch for a model with :func:`fixed_size_reason`.

    The fused operators stay single nodes in the program (``ggnet_fast::spatial``,
    ``joint``, ``channel``); running it needs ``ggnet_fast`` imported.
    """
    args = example_args(model, example, image_size)
    if dynamic:
        args = _batch_of_two(args)
    module = inference_module(model, outputs)
    shapes = dynamic_shapes(args, dynamic, spatial=fixed_size_reason(module) is None)
    with _eval_mode(module), torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=shapes)


def export_onnx(model: nn.Module, path: str | os.PathLike, example_input=None, *,
                dynamic: bool = True, opset: int = MIN_OPSET, outputs: str = "logits",
                image_size: int = 256, optimize: bool = True):
    """Export ``model`` to the ONNX file ``path`` (written atomically; replaced if present).

    Args:
        model, example_input, outputs, image_size: as for :func:`export_program`.
        dynamic: batch and spatial sizes symbolic in the graph (default), as far as the
            model allows; ``False`` fixes the example's shapes.
        opset: ONNX opset (>= 18; the exporter converts to a later one).
        optimize: run the exporter's ONNX optimiser (constant folding, dead outputs).

    Returns the :class:`torch.onnx.ONNXProgram`.  Raises :class:`ExportError` when the
    model holds an operator without translation (the Triton backend's: export on the
    CPU with ``backend="auto"`` or ``"cpu"`` instead).
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    program = export_program(model, example_input, dynamic=dynamic, outputs=outputs,
                             image_size=image_size)
    missing = untranslated_ops(program)
    if missing:
        raise ExportError(
            f"{', '.join(missing)} has no ONNX translation (only {list(onnx_ops.TRANSLATED)} "
            f"do: it is the Triton backend's, CUDA only); export the model on the CPU with the "
            f"attention modules' backend 'auto' or 'cpu' (model.to('cpu'), and for a GG-Net "
            f"model.set_backend('auto'))")
    with _eval_mode(model):
        onnx_program = torch.onnx.export(
            program, (), dynamo=True, opset_version=opset, optimize=optimize, verbose=False,
            custom_translation_table=onnx_ops.translation_table(),
            output_names=["logits"] if _is_ggnet(model) and outputs == "logits" else None)
    _save(onnx_program, os.fspath(path))
    return onnx_program


def _save(onnx_program, path: str) -> None:
    """Save through a temporary file in the same folder (:func:`atomic_destination`)."""
    with atomic_destination(path) as tmp:
        onnx_program.save(tmp)


def onnxruntime_session(path: str | os.PathLike, threads: int | None = None):
    """A CPU :class:`onnxruntime.InferenceSession` for ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path_or_session, *args: torch.Tensor) -> list[torch.Tensor]:
    """Run the ONNX model on ``args`` (CPU) and return its outputs as tensors."""
    session = (path_or_session if hasattr(path_or_session, "run")
               else onnxruntime_session(path_or_session))
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(args):
        raise ValueError(f"the ONNX model takes {len(names)} inputs {names}, got {len(args)}")
    feed = {n: a.detach().cpu().numpy() for n, a in zip(names, args)}
    return [torch.from_numpy(o) for o in session.run(None, feed)]


def compare_with_torch(model: nn.Module, path_or_session, *args: torch.Tensor,
                       outputs: str = "logits") -> dict:
    """Run ``model`` (PyTorch, eval mode) and the ONNX model on the same inputs.

    Returns ``{"max_abs_error", "max_abs_reference", "outputs"}`` over all outputs."""
    module = inference_module(model, outputs)
    with _eval_mode(module), torch.no_grad():
        expected = module(*args)
    flat = [t for t in torch.utils._pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    got = run_onnx(path_or_session, *args)
    if len(got) != len(flat):
        raise ValueError(f"the ONNX model returns {len(got)} outputs, PyTorch {len(flat)}")
    err = max(float((g - e.detach().cpu().float()).abs().max()) for g, e in zip(got, flat))
    ref = max(float(e.detach().abs().max()) for e in flat)
    return {"max_abs_error": err, "max_abs_reference": ref, "outputs": len(flat)}
