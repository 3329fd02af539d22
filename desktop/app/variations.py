"""What the window's Variations run with, in plain data: the source picture's own prompt
unless the user typed a new one for it, and as many pictures as `easel variations` makes;
keeping the meaning, a new picture at the source's size with the source as an image prompt.

A new user's variations of a gallery picture used whatever text was left in the prompt box
(and a model that knew none of its words refused them); the picture's own prompt is what a
variation of it means. Qt-free, so tests check the rule without a display.
"""

from __future__ import annotations

from dataclasses import replace

from desktop.app.editing import SourcePicture
from desktop.app.parameters import VARIATIONS_COUNT, Form, request_from
from engine.image_prompt.prompt import ImagePrompt
from engine.request import TextToImageRequest

__all__ = ["VARIATIONS_COUNT", "meaning_request", "variations_form"]


def variations_form(form: Form, source: SourcePicture, prompt_at_source: str | None) -> Form:
    """The form Variations of ``source`` run with. ``prompt_at_source`` is what the prompt
    box held when the picture became the source: a prompt typed since is the user's own for
    it and steers the variations; otherwise the picture's own prompt and negative prompt do
    (none, for a picture that carries none)."""
    form = replace(form, count=form.variations)
    if prompt_at_source is not None and form.prompt != prompt_at_source:
        return form
    return replace(form, prompt=source.prompt, negative_prompt=source.negative_prompt)


def meaning_request(form: Form, source: SourcePicture, image_prompts: tuple[ImagePrompt, ...],
                    multiple: int) -> TextToImageRequest:
    """Variations that keep the meaning (DALL·E 2's kind, ``easel variations --mode
    meaning``): text to image steered by ``image_prompts`` (the source read by an
    IP-Adapter), at the source's size rounded down to the model's pixel ``multiple``. Hires
    fix is left out, as it is for variations that keep the composition."""
    width, height = source.size
    sized = replace(form, width=max(multiple, width // multiple * multiple),
                    height=max(multiple, height // multiple * multiple), hires_scale=1.0)
    return replace(request_from(sized), image_prompts=image_prompts)
