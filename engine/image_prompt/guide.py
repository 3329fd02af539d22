"""Image prompts during denoising: the reference pictures encoded once per request into image
tokens, and the UNet that reads them, as diffusers' pipelines do with ``ip_adapter_image``.

The interface the denoising loop (engine.pipelines.diffusion.denoise) uses:

- ``ImagePromptGuide(model, image_prompts, use_guidance, runtime=None)`` checks everything
  (one sentence each: another family's adapter, an encoder of the wrong width, a picture that
  cannot be read, several adapters) and encodes the pictures, before any denoising.
- ``.unet`` / ``.unet_for(control)``: the Session to run instead of ``model.unet``, the one
  that also takes ControlNet residuals when ``control`` is True (with a ControlGuide, call
  ``unet_for(True)`` instead of ``control.unet``).
- ``.feeds(batch)``: ``ip_tokens`` (batch, tokens, width) and ``ip_scale`` (batch,) for a
  UNet call of ``batch`` samples laid out with guidance as the loop builds them: the negative
  prompt's row first, then one row per prompt (text to image's [negative, prompt], layout
  regions' [negative, global, regions...]); all prompts' rows without. Both are batched on
  axis 0 like every other input, so the bound UNet calls' batch splitting
  (``engine.runtime.binding.BoundCalls``) slices them unchanged; a ControlNet ignores them.
- ``.recorded``: what the picture records (adapter name and hash, encoder name, weight).
- ``.notes``: sentences for the user.

What diffusers does, followed here: several pictures for one adapter give their tokens one
after another (the UNet attends to all of them); the negative half gets the projection of
zero ``image_embeds`` for a base adapter and, for a plus adapter, of the encoder's hidden
states for an all-zero (already normalised) picture: ``torch.zeros_like(image)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.control.control import picture_key
from engine.description import FAMILY_NAMES
from engine.errors import BadRequest
from engine.image_prompt.prompt import (
    MAX_PICTURES,
    ImagePrompt,
    RecordedImagePrompt,
    reference_pixels,
)
from engine.image_prompt.sessions import ImageEncoder, IPAdapter
from engine.image_prompt.unet_edit import IP_SCALE, IP_TOKENS, ip_unet_path
from engine.model import Model
from engine.runtime import (
    CancelToken,
    RuntimeOptions,
    Session,
    get_session,
    release_sessions,
)


class ImagePromptGuide:
    """The image prompts of one request, checked and encoded."""

    def __init__(self, model: Model, image_prompts: Sequence[ImagePrompt], use_guidance: bool,
                 runtime: RuntimeOptions | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.model = model
        self.use_guidance = use_guidance
        self.runtime = runtime or model.runtime
        self.notes: list[str] = []
        self.prompts = checked_image_prompts(image_prompts)
        first = self.prompts[0]
        self.adapter = IPAdapter(Path(first.adapter), self.runtime)
        self.encoder = ImageEncoder(Path(first.encoder), self.runtime)
        self.weight = float(first.weight)
        check_fits(self.adapter, self.encoder, model)
        self.pictures = [reference_pixels(prompt.picture) for prompt in self.prompts]
        self.negative, self.positive = self._tokens(self.pictures, cancel or CancelToken())
        # The encoder is done: its weights (2.5 GB for ViT-H) would otherwise stay loaded
        # through the whole denoising; loading it again next time costs about 3 s here.
        release_sessions(self.encoder.folder)

    @property
    def recorded(self) -> tuple[RecordedImagePrompt, ...]:
        return tuple(RecordedImagePrompt(self.adapter.name, self.adapter.hash,
                                         self.encoder.name, float(prompt.weight),
                                         picture_key(pixels))
                     for prompt, pixels in zip(self.prompts, self.pictures, strict=True))

    @property
    def unet(self) -> Session:
        return self.unet_for(False)

    def unet_for(self, control: bool) -> Session:
        """The model's UNet with this adapter's image branch (made on first use, cached
        under the runtime's cache folder), with the residual inputs too when ``control``."""
        model = self.model
        path = ip_unet_path(model.folder, model.hash, self.adapter.folder, self.adapter.hash,
                            self.runtime.optimized_cache, control)
        # The variant keeps every weight's name, so the LoRAs in use apply to it as to the
        # plain UNet.
        return get_session(path, model.runtime, model.overrides_for("unet"), half=True)

    def feeds(self, batch: int, unet: Session | None = None) -> dict[str, np.ndarray]:
        """``ip_tokens`` and ``ip_scale`` for a UNet call of ``batch`` samples, typed for
        ``unet`` (the session that runs them; by default the one without residual inputs)."""
        if self.use_guidance:  # the negative prompt's row first, then the prompts' rows
            tokens = np.concatenate([self.negative] + [self.positive] * (batch - 1))
        else:
            tokens = np.concatenate([self.positive] * batch)
        scale = np.full((batch,), self.weight, dtype=np.float32)
        unet = unet or self.unet_for(False)
        return {IP_TOKENS: tokens.astype(unet.input_type(IP_TOKENS)),
                IP_SCALE: scale.astype(unet.input_type(IP_SCALE))}

    def _tokens(self, pictures: list[np.ndarray], cancel: CancelToken
                ) -> tuple[np.ndarray, np.ndarray]:
        """(negative, positive) image tokens, each (1, pictures × tokens, width)."""
        output = self.adapter.encoder_output
        values = np.concatenate([self.encoder.pixel_values(pixels) for pixels in pictures])
        encoded = self.encoder.encode(values, output, cancel)
        if output == "image_embeds":
            unconditioned = np.zeros_like(encoded)
        else:
            unconditioned = self.encoder.encode(np.zeros_like(values), output, cancel)
        positive = self.adapter.tokens(encoded, cancel)
        negative = self.adapter.tokens(unconditioned, cancel)
        width = positive.shape[-1]
        return negative.reshape(1, -1, width), positive.reshape(1, -1, width)


def checked_image_prompts(image_prompts: Sequence[ImagePrompt]) -> tuple[ImagePrompt, ...]:
    """The request's image prompts; one sentence when they are not ones this version runs:
    none, too many, more than one adapter or encoder, or pictures with different weights
    (diffusers scales one adapter's pictures together)."""
    prompts = tuple(image_prompts)
    if not prompts or not all(isinstance(prompt, ImagePrompt) for prompt in prompts):
        raise BadRequest("Each image prompt must be an engine ImagePrompt (an IP-Adapter, an "
                         "image encoder, a picture and a weight).")
    if len(prompts) > MAX_PICTURES:
        raise BadRequest(f"At most {MAX_PICTURES} reference pictures can steer one picture "
                         f"(got {len(prompts)}).")
    if len({Path(prompt.adapter).resolve() for prompt in prompts}) > 1:
        raise BadRequest("Image prompts can use one IP-Adapter at a time for now; give all "
                         "the reference pictures the same one.")
    if len({Path(prompt.encoder).resolve() for prompt in prompts}) > 1:
        raise BadRequest("The reference pictures of one IP-Adapter are read by one image "
                         "encoder; give them all the same one.")
    if len({float(prompt.weight) for prompt in prompts}) > 1:
        raise BadRequest("The reference pictures of one IP-Adapter share one weight; give "
                         "them all the same weight.")
    return prompts


def check_fits(adapter: IPAdapter, encoder: ImageEncoder, model: Model) -> None:
    """An adapter of another family, or an encoder of another width, is refused."""
    family, fits = model.description.family, adapter.description.family
    if family != fits:
        raise BadRequest(f"The IP-Adapter '{adapter.name}' is for "
                         f"{FAMILY_NAMES.get(fits, fits)} models; '{model.name}' is "
                         f"{FAMILY_NAMES.get(family, family)}.")
    needed = adapter.description.encoder_width
    if adapter.description.variant == "base":
        has, what = encoder.description.projection, "image embeddings"
    else:
        has, what = encoder.description.width, "hidden states"
    if has != needed:
        raise BadRequest(f"The IP-Adapter '{adapter.name}' reads {what} {needed} wide, and the "
                         f"image encoder '{encoder.name}' gives them {has} wide; use the "
                         f"encoder the adapter was trained with.")
