"""What the window's Variations run with, in plain data: the source picture's own prompt
unless the user typed a new one for it, and as many pictures as `easel variations` makes.

A new user's variations of a gallery picture used whatever text was left in the prompt box
(and a model that knew none of its words refused them); the picture's own prompt is what a
variation of it means. Qt-free, so tests check the rule without a display.
"""

from __future__ import annotations

from dataclasses import replace

from desktop.app.editing import SourcePicture
from desktop.app.parameters import VARIATIONS_COUNT, Form

__all__ = ["VARIATIONS_COUNT", "variations_form"]


def variations_form(form: Form, source: SourcePicture, prompt_at_source: str | None) -> Form:
    """The form Variations of ``source`` run with. ``prompt_at_source`` is what the prompt
    box held when the picture became the source: a prompt typed since is the user's own for
    it and steers the variations; otherwise the picture's own prompt and negative prompt do
    (none, for a picture that carries none)."""
    form = replace(form, count=form.variations)
    if prompt_at_source is not None and form.prompt != prompt_at_source:
        return form
    return replace(form, prompt=source.prompt, negative_prompt=source.negative_prompt)
