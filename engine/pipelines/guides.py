"""What steers the UNet besides the prompt: a request's ControlNets and image prompts, made
ready before any denoising (one sentence for whatever cannot work), and what each step adds to
the UNet's inputs. The pipelines that take them (text to image, image to image, inpainting)
share this; plain requests never load either part.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from engine.request import GenerationParameters
from engine.runtime import CancelToken, Session

if TYPE_CHECKING:
    from engine.control.guide import ControlGuide
    from engine.image_prompt.guide import ImagePromptGuide
    from engine.model import Model


@dataclass(frozen=True, eq=False)
class Guides:
    control: ControlGuide | None = None
    image_prompt: ImagePromptGuide | None = None

    def unet(self, model: Model) -> Session:
        """The UNet the request runs: the plain one, or the variant that also takes ControlNet
        residuals, image tokens or both (only that one is loaded, never the plain one too)."""
        if self.image_prompt is not None:
            return self.image_prompt.unet_for(self.control is not None)
        return model.unet if self.control is None else self.control.unet

    def feeds(self, index: int, steps: int, feeds: dict[str, np.ndarray], unet: Session,
              cancel: CancelToken) -> dict[str, np.ndarray]:
        """The UNet inputs they add at step ``index`` (from 0) of ``steps``, given the others
        (the latents without an inpainting UNet's extra channels: ControlNets read four)."""
        added = {}
        if self.control is not None:
            added.update(self.control.residual_feeds(index, steps, feeds, cancel))
        if self.image_prompt is not None:
            added.update(self.image_prompt.feeds(len(feeds["sample"]), unet))
        return added

    def recorded(self, parameters: GenerationParameters) -> GenerationParameters:
        """``parameters`` with what the picture records of them."""
        if self.control is not None:
            parameters = replace(parameters, controls=self.control.recorded)
        if self.image_prompt is not None:
            parameters = replace(parameters, image_prompts=self.image_prompt.recorded)
        return parameters

    @property
    def notes(self) -> list[str]:
        return [note for guide in (self.control, self.image_prompt) if guide is not None
                for note in guide.notes]


def prepare_guides(model: Model, controls: tuple, image_prompts: tuple, width: int,
                   height: int, use_guidance: bool, cancel: CancelToken) -> Guides:
    """The request's controls (their pictures at ``width`` × ``height``) and image prompts
    (their pictures encoded once), every check done before any denoising."""
    control = image_prompt = None
    if controls:
        from engine.control.guide import ControlGuide

        control = ControlGuide(model, controls, width, height, use_guidance)
    if image_prompts:
        from engine.image_prompt.guide import ImagePromptGuide

        image_prompt = ImagePromptGuide(model, image_prompts, use_guidance, cancel=cancel)
    return Guides(control, image_prompt)


def input_pictures(request: object) -> dict[str, np.ndarray]:
    """The control pictures and reference pictures a request reads, by the key its pictures
    record (``RecordedControl.picture``, ``RecordedImagePrompt.picture``), for the app to
    keep beside them."""
    from engine.control.control import picture_key
    from engine.control.pictures import control_rgb
    from engine.image_prompt.prompt import reference_pixels

    pictures = [control_rgb(control.picture) for control in getattr(request, "controls", ())]
    pictures += [reference_pixels(prompt.picture)
                 for prompt in getattr(request, "image_prompts", ())]
    return {picture_key(pixels): pixels for pixels in pictures}
