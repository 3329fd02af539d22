"""How many pictures of one request share a UNet call.

The pictures of a request share their prompt, size and timesteps, so their latents can go
through the UNet together: with guidance a call of n pictures is 2 × n samples,
[negatives..., positives...] as diffusers batches them. Each picture keeps its own generator
and scheduler (design.md, Seeds), so its pixels are those it would have alone.

The user's setting (``RuntimeOptions.image_batch``, "model.runtime.image_batch") decides
when it is not 0. At 0 the device decides:

- the CPU makes one picture per call. Its cores are already kept busy by one picture's
  GEMMs, so a larger batch costs as much per sample (reasoned, not measured here), and one at
  a time shows each picture's progress and preview as it forms;
- a GPU takes as many as ``GPU_LATENT_BUDGET`` allows. One call of one picture leaves much
  of a large GPU idle between its many small kernels, so sharing calls makes each picture
  cheaper; the activations grow with samples × latent pixels, and past about eight 64 × 64
  samples (four SD 1.5 pictures at 512 × 512 with guidance) a call already fills the GPU,
  so the budget stops there. It gives four pictures a call at 512 × 512 with guidance, eight
  for a turbo model without, and one for SDXL at 1024 × 1024 with guidance. A GPU too small
  for it is not refused: out of memory halves the pictures per call and carries on
  (``DiffusionPipeline.denoise_images``).
"""

from __future__ import annotations

# Samples × latent pixels (height × width) one UNet call may take on a GPU: 8 × 64 × 64.
GPU_LATENT_BUDGET = 8 * 64 * 64


def images_per_call(image_batch: int, provider: str, count: int,
                    latent_pixels_per_image: int) -> int:
    """Pictures per UNet call for ``count`` pictures of ``latent_pixels_per_image`` (the
    samples of one picture, 2 with guidance, times its latent height × width) on
    ``provider`` (the short name of the provider in use: "cpu", "cuda", ...), under the
    user's ``image_batch`` (0: chosen here). Always from 1 to ``count``."""
    if image_batch:
        chosen = image_batch
    elif provider == "cpu":
        chosen = 1
    else:
        chosen = GPU_LATENT_BUDGET // max(latent_pixels_per_image, 1)
    return max(1, min(count, chosen))
