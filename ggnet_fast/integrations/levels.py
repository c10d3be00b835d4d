"""Feature levels of a backbone: what a retrofit may put its block on or guide it by."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureLevel:
    """One feature map a backbone returns.

    ``key`` indexes the backbone's output: a position in its feature list (smp, timm) or
    a key of its feature dict (torchvision).  ``channels`` is the map's C (0: a
    placeholder the backbone returns empty, e.g. smp's mix-transformer level 1).
    ``note`` says where it comes from ("input image", "layer4", ...)."""

    key: int | str
    channels: int
    note: str = ""

    def describe(self) -> str:
        note = f", {self.note}" if self.note else ""
        return f"{self.key!r} ({self.channels} ch{note})"


def describe_levels(levels: Sequence[FeatureLevel]) -> str:
    """``"0 (3 ch, input image), 1 (64 ch), ..."``: the levels a block can use."""
    return ", ".join(level.describe() for level in levels if level.channels > 0)


def resolve_level(argument: str, requested: int | str, levels: Sequence[FeatureLevel]
                  ) -> FeatureLevel:
    """The level ``requested`` names: an int indexes ``levels`` (negative from the end,
    Python style), a string matches a level's ``key``.  ``ValueError`` naming the
    available levels and their channels when there is no such level or it is empty."""
    found = None
    if isinstance(requested, bool):
        pass
    elif isinstance(requested, int):
        if -len(levels) <= requested < len(levels):
            found = levels[requested]
    elif isinstance(requested, str):
        found = next((level for level in levels if level.key == requested), None)
    else:
        raise TypeError(f"{argument} must be an int or a str, got {type(requested).__name__}")
    if found is None or found.channels <= 0:
        why = "an empty placeholder" if found is not None else "not a feature level"
        raise ValueError(f"{argument}={requested!r} is {why} of this model; available levels "
                         f"(key, channels): {describe_levels(levels)}")
    return found
