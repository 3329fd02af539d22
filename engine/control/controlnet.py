"""An installed ControlNet: its description and its session, which turns the latents, the text
and a control picture into the residuals the UNet adds to its skip connections.

The graph follows OnnxStack's names: inputs ``sample``, ``timestep``,
``encoder_hidden_states``, ``controlnet_cond``, ``conditioning_scale`` (SDXL also
``text_embeds``, ``time_ids``); outputs ``down_block_{i}_additional_residual`` and
``mid_block_additional_residual``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engine.control.description import (
    MID_RESIDUAL,
    ControlNetDescription,
    down_residual,
    read_controlnet_description,
)
from engine.errors import ModelError
from engine.manifest import manifest_hash, verify_manifest
from engine.runtime import CancelToken, RuntimeOptions, Session, get_session


class ControlNet:
    """Cheap to create; the session opens on first use and is shared like a model's."""

    def __init__(self, folder: Path, runtime: RuntimeOptions | None = None) -> None:
        self.folder = Path(folder)
        self.name = self.folder.name
        if not self.folder.is_dir():
            raise ModelError(f"The ControlNet '{self.name}' is not installed.")
        self.description: ControlNetDescription = read_controlnet_description(self.folder)
        verify_manifest(self.folder)
        self.hash = manifest_hash(self.folder)
        self.runtime = runtime or RuntimeOptions()

    @property
    def session(self) -> Session:
        return get_session(self.folder / "model.onnx", self.runtime, half=True)

    @property
    def residual_names(self) -> list[str]:
        """The outputs in the order the UNet variant's inputs take them: down blocks, mid."""
        return [down_residual(i) for i in range(self.description.residuals)] + [MID_RESIDUAL]

    def residuals(self, feeds: Mapping[str, np.ndarray], picture: np.ndarray,
                  cancel: CancelToken) -> list[np.ndarray]:
        """Unscaled residuals (conditioning scale 1) for a batch: ``feeds`` holds the UNet's
        inputs for that batch (the graph takes those it names), ``picture`` the control
        picture (1, 3, H, W) in [0, 1], repeated here to the batch. The caller scales them,
        so guess mode's per-layer scales and a plain weight are one multiplication."""
        session = self.session
        batch = len(feeds["sample"])
        inputs = {name: value for name, value in feeds.items() if name in session.input_names}
        inputs["timestep"] = inputs["timestep"].astype(session.input_type("timestep"))
        inputs["controlnet_cond"] = np.repeat(picture, batch, axis=0).astype(
            session.input_type("controlnet_cond"))
        scale = np.array(1.0, dtype=session.input_type("conditioning_scale"))
        if session.input_rank("conditioning_scale"):  # a one-element vector, not a scalar
            scale = scale.reshape(1)
        inputs["conditioning_scale"] = scale
        return session.run(inputs, self.residual_names, cancel)
