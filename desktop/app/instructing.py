"""Instruct in the window: the source picture changed as the prompt says ("make it winter"),
with an InstructPix2Pix model, in plain data (the ``easel instruct`` command's counterpart).

Qt-free: the studio asks ``instruct_problem`` before queueing and turns the form into the
request with ``instruct_request``; the engine checks the request again before it runs.
"""

from __future__ import annotations

from desktop.app.editing import SourcePicture
from desktop.app.parameters import Form, ModelChoice, batch_seed
from engine.request import InstructPix2PixRequest

INSTRUCT_VARIANT = "instruct-pix2pix"
NO_INSTRUCTION = ('Type the instruction in the prompt first: how to change the picture, '
                  'e.g. "make it winter".')


def is_instruct_model(model: ModelChoice | None) -> bool:
    return model is not None and model.description.variant == INSTRUCT_VARIANT


def wrong_model(model: ModelChoice | None) -> str:
    """Why this model cannot follow an instruction, and what can, in one sentence."""
    if model is None:
        return ("Instruct needs an InstructPix2Pix model (such as timbrooks/instruct-pix2pix); "
                "import one with Models › Import model….")
    return (f"Instruct needs an InstructPix2Pix model (such as timbrooks/instruct-pix2pix, "
            f"imported with Models › Import model…), and '{model.name}' is not one; choose "
            f"one in the Model box.")


def instruct_problem(model: ModelChoice | None, form: Form) -> str | None:
    """The one sentence that says why Instruct cannot run yet, or None when it can (the
    missing model and source are the studio's shared checks)."""
    if model is not None and not is_instruct_model(model):
        return wrong_model(model)
    if not form.prompt.strip():
        return NO_INSTRUCTION
    return None


def instruct_request(form: Form, source: SourcePicture) -> InstructPix2PixRequest:
    """The source changed as the prompt says; Image guidance says how much of it to keep."""
    return InstructPix2PixRequest(
        source.pixels, form.prompt, guidance=form.guidance, image_guidance=form.image_guidance,
        negative_prompt=form.negative_prompt, steps=form.steps, scheduler=form.scheduler,
        seed=batch_seed(form), count=form.count, generator=form.generator,
        emphasis=form.emphasis)
