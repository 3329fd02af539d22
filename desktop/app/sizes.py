"""The picture sizes the window offers a model, and the size rule as the window says it.

Every size offered keeps the size rule (``engine.size_rule``): sides are multiples of the
model's pixel multiple. A model that draws at a fixed scale (its description names a largest
native side: the starter's 256 px) is offered only its own size and whole-number enlargements
of it, which it draws once at its own size and enlarges pixel for pixel; smaller sizes and
other shapes are not what it learned to draw. Qt-free, like ``desktop.app.parameters``.
"""

from __future__ import annotations

from desktop.app.parameters import BASE_SIDES, ModelChoice, SizePreset, size_presets
from engine.size_rule import rule_for

# Whole-number enlargements offered for a fixed-scale model stop at the largest common side.
LARGEST_OFFERED_SIDE = max(BASE_SIDES)


def size_choices(model: ModelChoice) -> list[SizePreset]:
    """The sizes the size box offers ``model``."""
    description = model.description
    if description.largest_native_side is None:
        return size_presets(model)
    width, height = description.default_width, description.default_height
    choices = [SizePreset(f"{width} × {height}", width, height)]
    factor = 2
    while max(width, height) * factor <= LARGEST_OFFERED_SIDE:
        choices.append(SizePreset(f"{width * factor} × {height * factor}  ({width} × {height} "
                                  f"enlarged {factor}x)", width * factor, height * factor))
        factor += 1
    return choices


def size_tooltip(model: ModelChoice | None) -> str:
    """The size box's tooltip: what is offered and the rule, with this model's number."""
    if model is None:
        return "Sizes that suit the chosen model, in pixels"
    return f"Sizes this model draws well, in pixels; {rule_for(model.description)}"


def fitting_size(model: ModelChoice, width: int, height: int) -> tuple[int, int]:
    """``width`` x ``height`` with each side rounded to the nearest multiple of the model's
    pixel multiple (at least one multiple): a reused picture's size the model can make."""
    multiple = model.size_multiple
    return (max(multiple, round(width / multiple) * multiple),
            max(multiple, round(height / multiple) * multiple))
