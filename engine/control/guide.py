"""ControlNets during denoising: at each step, the residuals every control adds to the UNet's
skip connections, as diffusers' StableDiffusion(XL)ControlNetPipeline computes them.

Several controls add up; a control outside its start and end steers with zeros (diffusers
still runs it, at scale 0: the same sum). With controls the UNet that takes residuals runs
every step, so the plain UNet is never loaded beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from engine.control.control import Control, RecordedControl, picture_key
from engine.control.controlnet import ControlNet
from engine.control.pictures import control_rgb, prepare_control_picture
from engine.description import FAMILY_NAMES
from engine.errors import BadRequest
from engine.memory import memory_info
from engine.model import Model
from engine.runtime import CancelToken, Session
from engine.runtime.sessions import is_loaded

# With guidance, the UNet batch holds the negative prompt's row first, then one row per
# prompt: text to image's [negative, prompt], layout regions' [negative, global, regions...].
NEGATIVE_ROWS = 1


class ControlGuide:
    """The controls of one request, checked and with their pictures made ready, before any
    denoising. ``notes`` are sentences for the user (a control picture was resized)."""

    def __init__(self, model: Model, controls: Sequence[Control], width: int, height: int,
                 use_guidance: bool) -> None:
        self.model = model
        self.use_guidance = use_guidance
        self.notes: list[str] = []
        self.controls: list[tuple[Control, ControlNet, np.ndarray]] = []
        controlnets = [ControlNet(Path(control.controlnet), model.runtime)
                       for control in controls]
        for controlnet in controlnets:
            check_fits(controlnet, model)
        check_memory(controlnets)
        self.pictures = [control_rgb(control.picture) for control in controls]
        self.keys = [picture_key(pixels) for pixels in self.pictures]
        for control, controlnet in zip(controls, controlnets, strict=True):
            picture, note = prepare_control_picture(control.picture, width, height)
            if note:
                self.notes.append(note)
            self.controls.append((control, controlnet, picture))
        self._zero_shapes: dict[tuple[int, ...], list[tuple[int, ...]]] = {}

    @property
    def recorded(self) -> tuple[RecordedControl, ...]:
        """What the picture records of its controls (engine.request.GenerationParameters)."""
        return tuple(RecordedControl(controlnet.name, controlnet.hash,
                                     controlnet.description.control, float(control.weight),
                                     float(control.start), float(control.end),
                                     bool(control.guess_mode), key)
                     for (control, controlnet, _), key in zip(self.controls, self.keys,
                                                               strict=True))

    @property
    def unet(self) -> Session:
        return self.model.control_unet

    def residual_feeds(self, index: int, steps: int, feeds: Mapping[str, np.ndarray],
                       cancel: CancelToken) -> dict[str, np.ndarray]:
        """The residual inputs of the UNet's call at step ``index`` (from 0) of ``steps``:
        ``feeds`` are its other inputs, the latents without an inpainting UNet's extra
        channels (the ControlNet reads four)."""
        total = None
        for control, controlnet, picture in self.controls:
            if control.weight == 0 or not control.steers_at(index, steps):
                continue
            residuals = self._residuals(control, controlnet, picture, feeds, cancel)
            total = residuals if total is None else [
                a + b for a, b in zip(total, residuals, strict=True)]
        if total is None:
            total = [np.zeros(shape, np.float32) for shape in self._shapes(feeds, cancel)]
        names = self.controls[0][1].residual_names
        return dict(zip(names, total, strict=True))

    def _residuals(self, control: Control, controlnet: ControlNet, picture: np.ndarray,
                   feeds: Mapping[str, np.ndarray], cancel: CancelToken) -> list[np.ndarray]:
        guess = control.guess_mode and self.use_guidance
        seen = feeds
        if guess:
            # Only the prompts' rows see the ControlNet; the negative prompt's (the first
            # row: guidance, and layout regions, put it there once) gets zeros, so guidance
            # pushes towards the control.
            seen = {name: value[NEGATIVE_ROWS:] for name, value in feeds.items()}
        residuals = controlnet.residuals(seen, picture, cancel)
        scales = layer_scales(len(residuals), control.weight, control.guess_mode)
        residuals = [r * scale for r, scale in zip(residuals, scales, strict=True)]
        if guess:
            residuals = [np.concatenate([np.zeros_like(r[:NEGATIVE_ROWS]), r])
                         for r in residuals]
        self._zero_shapes.setdefault(_size_key(feeds), [r.shape for r in residuals])
        return residuals

    def _shapes(self, feeds: Mapping[str, np.ndarray],
                cancel: CancelToken) -> list[tuple[int, ...]]:
        """The residuals' shapes for zeros, learnt from one ControlNet run when no control
        has run yet at this size (a control that starts after the first step)."""
        key = _size_key(feeds)
        if key not in self._zero_shapes:
            control, controlnet, picture = self.controls[0]
            self._zero_shapes[key] = [r.shape for r in controlnet.residuals(feeds, picture,
                                                                            cancel)]
        return self._zero_shapes[key]


def _size_key(feeds: Mapping[str, np.ndarray]) -> tuple[int, ...]:
    """The UNet call's batch and latent size, which fix the residuals' shapes."""
    shape = feeds["sample"].shape
    return (shape[0], *shape[2:])


def layer_scales(count: int, weight: float, guess_mode: bool) -> np.ndarray:
    """Each residual's scale: the weight, or in guess mode the weight times 10^-1 … 10^0
    from the shallowest layer to the mid block (diffusers' ``torch.logspace(-1, 0, n)``), so
    the ControlNet's coarse layers lead."""
    if not guess_mode:
        return np.full(count, weight, dtype=np.float32)
    return (np.float32(10.0) ** np.linspace(-1.0, 0.0, count, dtype=np.float32)
            * np.float32(weight)).astype(np.float32)


def check_memory(controlnets: list[ControlNet], free: int | None = None) -> None:
    """Refuse, before any work, ControlNets whose weights would not fit in the memory that is
    free (each one not yet loaded holds its weights: about 1.4 GB for SD 1.5's, 2.5 GB for
    SDXL's in fp32). Where the system does not say what is free, nothing is refused."""
    if free is None:
        info = memory_info()
        free = None if info is None else info[1]
    if free is None:
        return
    folders = {controlnet.folder: controlnet for controlnet in controlnets}
    needed = sum(weights_size(folder) for folder in folders
                 if not is_loaded(folder / "model.onnx"))
    if needed > free:
        raise BadRequest(f"These {len(folders)} ControlNets need about {needed / 1e9:.1f} GB "
                         f"of memory and {free / 1e9:.1f} GB is free; use fewer controls or "
                         f"close other programs.")


def weights_size(folder: Path) -> int:
    """The bytes of a model graph's weights: the graph file and its weights files."""
    return sum(path.stat().st_size for path in Path(folder).iterdir()
               if path.is_file() and path.name.startswith("model.onnx"))


def check_fits(controlnet: ControlNet, model: Model) -> None:
    """A ControlNet reads one family's latents and text; another family's is refused."""
    family, fits = model.description.family, controlnet.description.family
    if family != fits:
        raise BadRequest(f"The ControlNet '{controlnet.name}' is for "
                         f"{FAMILY_NAMES.get(fits, fits)} models; '{model.name}' is "
                         f"{FAMILY_NAMES.get(family, family)}.")
