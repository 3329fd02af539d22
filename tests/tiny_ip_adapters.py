"""Tiny random IP-Adapters and a tiny CLIP vision encoder for tests, built from configs and
seeds, never downloaded, laid out as h94/IP-Adapter ships them (``models/ip-adapter_sd15
.safetensors``, ``models/image_encoder/``), so diffusers' ``load_ip_adapter`` reads the same
files our import does.

They fit the tiny SD 1.x UNet of tests/tiny_models.py: 32-wide text, six cross-attentions
(two in ``down_blocks.1``, three in ``up_blocks.0``, one in the mid block), all 64 wide. The
adapters' weights are random and not small, so the image branch visibly changes the UNet's
output (a trained adapter's are not zero either; a test that could not fail proves nothing).

The "plus" adapter's Resampler is built with 64-wide hidden states because diffusers reads
its heads as ``to_q`` rows // 64, and with four layers because its converter maps four.

The SDXL ones (``save_xl_hub_layout``) fit the tiny SDXL UNet of tests/tiny_models_xl.py:
64-wide text, and twelve cross-attentions, all 64 wide. Its ``transformer_layers_per_block``
(1, 2) gives every attention of ``down_blocks.1``, ``up_blocks.0`` and the mid block two
transformer layers, each with its own ``attn2``: 2 × 2 down, 3 × 2 up, 2 in the mid block.
diffusers numbers them as it registers the processors (down blocks, up blocks, mid block;
within an attention its transformer layers in turn), 1, 3, …, 23, as the original code does.
They are laid out as h94's ``sdxl_models/``: the base adapter reads the tiny "ViT-bigG" in
``sdxl_models/image_encoder/`` (another width than the SD 1.x encoder, so a mix-up shows),
the plus ``_vit-h`` one the SD 1.x encoder in ``models/image_encoder/``.
"""

from __future__ import annotations

from pathlib import Path

CROSS_ATTENTION_DIM = 32  # the tiny SD 1.x UNet's text width
LAYER_WIDTHS = (64,) * 6  # its cross-attentions' inner widths, in diffusers' order
ENCODER = {
    "hidden_size": 32, "intermediate_size": 37, "projection_dim": 16,
    "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 224, "patch_size": 14,
    "hidden_act": "gelu",
}
BASE_TOKENS, PLUS_TOKENS = 4, 16
RESAMPLER_WIDTH, RESAMPLER_DEPTH = 64, 4
BASE_FILE, PLUS_FILE = "ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors"
PICKLE_FILE = "ip-adapter_sd15.bin"

XL_CROSS_ATTENTION_DIM = 64  # the tiny SDXL UNet's text width
XL_LAYER_WIDTHS = (64,) * 12  # down_blocks.1: 2 × 2, up_blocks.0: 3 × 2, mid block: 2
XL_ENCODER = {**ENCODER, "hidden_size": 40, "intermediate_size": 45, "projection_dim": 24}
XL_BASE_FILE = "ip-adapter_sdxl.safetensors"
XL_PLUS_FILE = "ip-adapter-plus_sdxl_vit-h.safetensors"


def tiny_image_encoder(seed: int = 0, encoder: dict = ENCODER):
    """A ``CLIPVisionModelWithProjection`` with the real patch layout (224 / 14 → 257 tokens)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**encoder)).eval()


def adapter_state(variant: str, seed: int = 0, *, encoder=ENCODER,
                  cross_attention_dim: int = CROSS_ATTENTION_DIM,
                  layer_widths: tuple[int, ...] = LAYER_WIDTHS) -> dict:
    """The tensors of an IP-Adapter file in its original names (``image_proj.…``,
    ``ip_adapter.{1,3,5,…}.to_k_ip.weight``), ``variant`` "base" or "plus"."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int, scale: float = 0.2):
        return torch.randn(*shape, generator=generator) * scale

    def norm(width: int) -> dict:
        return {"weight": 1 + random(width, scale=0.1), "bias": random(width, scale=0.1)}

    if variant == "base":
        proj = {"proj.weight": random(BASE_TOKENS * cross_attention_dim,
                                      encoder["projection_dim"]),
                "proj.bias": random(BASE_TOKENS * cross_attention_dim)}
        proj.update({f"norm.{k}": v for k, v in norm(cross_attention_dim).items()})
    else:
        proj = _resampler(random, norm, encoder["hidden_size"], cross_attention_dim)
    state = {f"image_proj.{name}": value for name, value in proj.items()}
    for index, width in enumerate(layer_widths):
        number = 2 * index + 1  # the original numbering: attn1 layers take the even ones
        for role in ("k", "v"):
            state[f"ip_adapter.{number}.to_{role}_ip.weight"] = random(
                width, cross_attention_dim, scale=0.3)
    return {name: value.contiguous() for name, value in state.items()}


def _resampler(random, norm, encoder_width: int, output_width: int) -> dict:
    """IP-Adapter Plus's Resampler in the original (tencent-ailab) names."""
    width = RESAMPLER_WIDTH
    tensors = {"latents": random(1, PLUS_TOKENS, width, scale=width ** -0.5),
               "proj_in.weight": random(width, encoder_width),
               "proj_in.bias": random(width, scale=0.1),
               "proj_out.weight": random(output_width, width),
               "proj_out.bias": random(output_width, scale=0.1)}
    tensors.update({f"norm_out.{k}": v for k, v in norm(output_width).items()})
    for layer in range(RESAMPLER_DEPTH):
        block = f"layers.{layer}"
        for which in ("norm1", "norm2"):
            tensors.update({f"{block}.0.{which}.{k}": v for k, v in norm(width).items()})
        tensors[f"{block}.0.to_q.weight"] = random(width, width)
        tensors[f"{block}.0.to_kv.weight"] = random(2 * width, width)
        tensors[f"{block}.0.to_out.weight"] = random(width, width)
        tensors.update({f"{block}.1.0.{k}": v for k, v in norm(width).items()})
        tensors[f"{block}.1.1.weight"] = random(4 * width, width)
        tensors[f"{block}.1.3.weight"] = random(width, 4 * width)
    return tensors


def save_hub_layout(root: Path, seed: int = 0) -> Path:
    """``root/models/`` as h94/IP-Adapter lays it out: the base and plus adapters as
    .safetensors, the base one again as a .bin pickle (nested ``image_proj`` /
    ``ip_adapter`` dicts, as the original training code saves), and ``image_encoder/``."""
    import torch
    from safetensors.torch import save_file

    models = Path(root) / "models"
    models.mkdir(parents=True, exist_ok=True)
    base, plus = adapter_state("base", seed), adapter_state("plus", seed + 1)
    save_file(base, str(models / BASE_FILE))
    save_file(plus, str(models / PLUS_FILE))
    nested: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    for name, value in base.items():
        part, rest = name.split(".", 1)
        nested[part][rest] = value
    torch.save(nested, models / PICKLE_FILE)
    tiny_image_encoder(seed).save_pretrained(models / "image_encoder")
    return models


def save_xl_hub_layout(root: Path, seed: int = 10) -> Path:
    """``root/sdxl_models/`` as h94/IP-Adapter lays it out, tiny: the base adapter (for the
    encoder in ``sdxl_models/image_encoder/``) and the plus ``_vit-h`` one (for the SD 1.x
    encoder, written to ``root/models/image_encoder/`` as h94 has it)."""
    from safetensors.torch import save_file

    models = Path(root) / "sdxl_models"
    models.mkdir(parents=True, exist_ok=True)
    shape = {"cross_attention_dim": XL_CROSS_ATTENTION_DIM, "layer_widths": XL_LAYER_WIDTHS}
    save_file(adapter_state("base", seed, encoder=XL_ENCODER, **shape),
              str(models / XL_BASE_FILE))
    save_file(adapter_state("plus", seed + 1, **shape), str(models / XL_PLUS_FILE))
    tiny_image_encoder(seed, XL_ENCODER).save_pretrained(models / "image_encoder")
    tiny_image_encoder(seed + 1).save_pretrained(Path(root) / "models" / "image_encoder")
    return models
