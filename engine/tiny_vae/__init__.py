"""The tiny VAE (TAESD family, issue 23): a small decoder of Stable Diffusion latents, for
live previews and an optional fast decode of the final pictures.

Imported from diffusers' ``AutoencoderTiny`` folders or madebyollin's single-file decoder
weights and exported to ONNX at import (engine.export.tiny_vae); each fits the families whose
latent space it was trained on (engine.tiny_vae.description).
"""

from engine.tiny_vae.decode import TinyVae, load_tiny_vae
from engine.tiny_vae.description import (
    TINY_VAE_KIND,
    TinyVaeDescription,
    read_tiny_vae_description,
)

__all__ = ["TINY_VAE_KIND", "TinyVae", "TinyVaeDescription", "load_tiny_vae",
           "read_tiny_vae_description"]
