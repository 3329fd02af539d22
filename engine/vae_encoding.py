"""Image → latents with a model's VAE encoder, whichever of the two conventions its graph uses.

- ``latent_parameters`` (our exporter, optimum): mean and log-variance on the channel axis; the
  sample is drawn here from the seed's generator, so image-to-image stays reproducible (see
  design.md, Seeds), with diffusers' DiagonalGaussianDistribution clamp of the log-variance.
- ``latent_sample`` (Amuse/OnnxStack, diffusers' old ONNX export): latents with the latent
  channel count, used as they are. Such a graph either returns the mean or samples inside
  itself; nothing is drawn from the generator then, and an in-graph sample does not follow
  the seed.

Image-to-image and inpainting call ``encode_image`` and never look at the graph's names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engine.errors import ModelError
from engine.runtime import CancelToken

if TYPE_CHECKING:
    from engine.model import Model

VAE_ENCODER_OUTPUTS = ("latent_parameters", "latent_sample")
_LOG_VARIANCE_RANGE = (-30.0, 20.0)


def vae_encoder_output(model: Model) -> str:
    """"latent_parameters" or "latent_sample": the convention of the model's VAE encoder."""
    names = model.vae_encoder.output_names
    for name in VAE_ENCODER_OUTPUTS:
        if name in names:
            return name
    raise ModelError(f"The VAE encoder of model '{model.name}' gives {', '.join(names)}, not "
                     f"latent_parameters or latent_sample.")


def latents_from_encoder_output(output_name: str, output: np.ndarray,
                                rng: np.random.Generator) -> np.ndarray:
    """Unscaled VAE latents from the encoder's ``output_name`` tensor."""
    output = np.asarray(output, dtype=np.float32)
    if output_name == "latent_sample":
        return output
    mean, log_variance = np.split(output, 2, axis=1)
    log_variance = np.clip(log_variance, *_LOG_VARIANCE_RANGE)
    noise = rng.standard_normal(mean.shape, dtype=np.float32)
    return mean + np.exp(np.float32(0.5) * log_variance) * noise


def encode_image(model: Model, sample: np.ndarray, rng: np.random.Generator,
                 cancel: CancelToken | None = None) -> np.ndarray:
    """The latents the UNet works in (shifted and scaled as the description says) for
    ``sample``, an image batch as float32 NCHW in -1..1."""
    output_name = vae_encoder_output(model)
    (output,) = model.vae_encoder.run({"sample": np.asarray(sample, dtype=np.float32)},
                                      [output_name], cancel)
    latents = latents_from_encoder_output(output_name, output, rng)
    description = model.description
    latents = latents - np.float32(description.latent_shift_factor)
    return latents * np.float32(description.latent_scaling_factor)
