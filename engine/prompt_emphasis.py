"""Emphasis: how the weights of ``(words:1.3)`` change the text encoder's output.

As AUTOMATIC1111's web UI does it (its "Original" and "No norm" options), one 77-token chunk
at a time: every token's hidden state is multiplied by its weight; "original" then rescales
the whole chunk so its mean is what it was before the weighting. That keeps the overall
strength of the conditioning, so a few heavy weights shift the balance between words instead
of making the whole prompt louder.
"""

from __future__ import annotations

import numpy as np

from engine.errors import BadRequest

# "none" is A1111's "No norm": the weights apply and the mean is left as it comes out (said to
# suit SDXL better). A1111's own "None" (brackets read as plain text) is not offered.
EMPHASES = ("original", "none")


def check_emphasis(emphasis: str) -> None:
    if emphasis not in EMPHASES:
        raise BadRequest(f"The emphasis must be one of {', '.join(EMPHASES)} "
                         f"(got {emphasis!r}).")


def apply_emphasis(hidden: np.ndarray, weights: np.ndarray, emphasis: str) -> np.ndarray:
    """``hidden`` (tokens, features) of one chunk, weighted by ``weights`` (tokens,)."""
    weighted = hidden * weights.astype(hidden.dtype)[:, np.newaxis]
    if emphasis == "none":
        return weighted
    # The means are taken in float64: the ratio of two float32 means of near-zero hidden
    # states would lose digits the rescale then multiplies into every value.
    before = hidden.mean(dtype=np.float64)
    after = weighted.mean(dtype=np.float64)
    return (weighted * (before / after)).astype(hidden.dtype)
