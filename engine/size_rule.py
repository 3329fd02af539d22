"""The one size rule: every width, height and outpaint side is a multiple of the model's pixel
multiple (``ModelDescription.pixel_multiple``: 8 for Stable Diffusion, 64 for the starter).

The rule is worded here once, so the command line's help, the window and every refusal say it
the same way, and checked here once, so every pipeline that takes a size refuses the same
sizes before any work. Pictures given to an edit (variations, inpainting, outpainting's source)
may have any size: they are grown to the multiple by repeating their edge and cropped back.
"""

from __future__ import annotations

from engine.description import ModelDescription
from engine.errors import BadRequest

# The rule for no model in particular (help texts, the docs). The numbers are checked against
# the shipped starter and the Stable Diffusion families by the tests.
RULE = ("widths, heights and outpaint sides are multiples of the model's pixel multiple: "
        "8 for Stable Diffusion, 64 for the starter")
RULE_SENTENCE = RULE[0].upper() + RULE[1:] + "."


def rule_for(description: ModelDescription) -> str:
    """The rule with one model's number, as the window says it."""
    return (f"widths, heights and outpaint sides are multiples of "
            f"{description.pixel_multiple} pixels for this model")


def check_side(description: ModelDescription, model_name: str, label: str, value: object,
               allow_zero: bool = False) -> None:
    """Refuse a width, height (``allow_zero`` False) or outpaint side that breaks the rule."""
    multiple = description.pixel_multiple
    smallest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < smallest or (
            value % multiple):
        kind = "0 or a multiple" if allow_zero else "a positive multiple"
        raise BadRequest(f"The {label} must be {kind} of {multiple} pixels, the pixel multiple "
                         f"of '{model_name}' (got {value!r}).")
