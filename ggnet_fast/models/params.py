"""Parameter counts of GG-Net variants (``python -m ggnet_fast.models.params``)."""
from __future__ import annotations

import argparse

from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_table(model: nn.Module, trainable_only: bool = True) -> dict[str, int]:
    """Parameters per top-level child module (children with none are left out)."""
    table = {}
    for name, child in model.named_children():
        n = count_parameters(child, trainable_only)
        if n:
            table[name] = n
    return table


def variant_table(backbone: str = "resnext101_32x8d", preset: str = "paper",
                  variants=None, **overrides) -> list[tuple[str, int, dict[str, int]]]:
    """``(variant, total, per-module)`` for each variant, built with ``weights=None``."""
    from .build import build_ggnet
    from .config import VARIANTS

    rows = []
    for variant in variants or VARIANTS:
        model = build_ggnet(preset=preset, variant=variant, backbone=backbone, **overrides)
        rows.append((variant, count_parameters(model), parameter_table(model)))
        del model
    return rows


def format_variant_table(rows) -> str:
    """A Markdown table: variant, total (M) and the modules' share (M)."""
    modules = []
    for _, _, per in rows:
        modules += [m for m in per if m not in modules]
    head = "| variant | total (M) | " + " | ".join(modules) + " |"
    sep = "|---|---:|" + "---:|" * len(modules)
    lines = [head, sep]
    for variant, total, per in rows:
        cells = " | ".join(f"{per[m] / 1e6:.3f}" if m in per else "-" for m in modules)
        lines.append(f"| {variant} | {total / 1e6:.3f} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="resnext101_32x8d")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--variants", nargs="*", default=None)
    args = parser.parse_args(argv)
    print(f"backbone={args.backbone} preset={args.preset} (trainable parameters, millions)")
    print(format_variant_table(variant_table(args.backbone, args.preset, args.variants)))


if __name__ == "__main__":
    main()
