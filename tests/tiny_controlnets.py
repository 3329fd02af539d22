"""Tiny random-weight ControlNets for tests, fitting the tiny UNets of tests/tiny_models.py
(SD 1.x, SD 2.x) and tests/tiny_models_xl.py (SDXL), built from configs, never downloaded.

A ControlNet fits a UNet when it has the UNet's down path: diffusers' ``from_unet`` copies the
UNet's config (and, when asked, its down-path weights, as ControlNet training starts). Two
things differ from a trained ControlNet and are chosen for tests:

- diffusers initialises the zero convolutions (one per skip connection, the mid block's and
  the conditioning embedding's last) to zeros, as training starts; such a ControlNet gives
  all-zero residuals, and a test comparing pictures with and without it could not fail. Here
  they get small seeded random values instead.
- the conditioning embedding halves the control picture once, ``(16, 32)`` as diffusers' own
  ControlNet tests use, because the tiny VAE's scale factor is 2 (a real ControlNet's
  ``(16, 32, 96, 256)`` divides by 8, as a real VAE does): the control picture is the
  generated picture's size in both cases.
"""

from __future__ import annotations

# The conditioning embedding's channels: one stride-2 convolution, as the tiny VAE's factor 2.
TINY_CONDITIONING_CHANNELS = (16, 32)
# The zero convolutions' random values: small, like a ControlNet early in training, so the
# residuals change the UNet's output clearly without swamping it.
ZERO_CONV_SCALE = 0.1


def tiny_sd1_controlnet(unet=None, seed: int = 0, variant: str = "sd1"):
    """A diffusers ``ControlNetModel`` for the tiny SD 1.x UNet (``variant`` "sd2" for the
    SD 2.x one). Given ``unet``, the ControlNet is made from it (its config and down-path
    weights); otherwise from the tiny config with weights of its own, seeded by ``seed``."""
    from tests.tiny_models import CONFIGS

    return _controlnet(unet, CONFIGS[variant]["unet"], seed)


def tiny_sdxl_controlnet(unet=None, seed: int = 0):
    """A diffusers ``ControlNetModel`` for the tiny SDXL UNet (``addition_embed_type``
    "text_time": it takes ``text_embeds`` and ``time_ids`` as the UNet does)."""
    from tests.tiny_models_xl import XL_CONFIGS

    return _controlnet(unet, XL_CONFIGS["sdxl"]["unet"], seed)


def _controlnet(unet, unet_config: dict, seed: int):
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    copy_weights = unet is not None
    if unet is None:
        unet = UNet2DConditionModel(**unet_config)  # its config only: weights are not copied
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=TINY_CONDITIONING_CHANNELS,
        load_weights_from_unet=copy_weights)
    _randomise_zero_convolutions(controlnet, seed)
    return controlnet.eval()


def _randomise_zero_convolutions(controlnet, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    zero_convolutions = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                         controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for convolution in zero_convolutions:
            for parameter in convolution.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator)
                                * ZERO_CONV_SCALE)
