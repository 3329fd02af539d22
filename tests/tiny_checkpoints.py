"""Tiny single-file checkpoints in the original ("ldm") layout, made from tiny diffusers models.

The mapping here runs the other way from the converter (diffusers names -> CompVis/Stability
names) and is written independently of it, from the original repositories' module names:
a checkpoint written with it and converted back must give the diffusers weights exactly, which
checks both directions. It works on meta tensors too, so real-size architectures can be laid
out as headers without allocating them.

SD 1.x and 2.x come from tests/tiny_models.py; SDXL is built here, small but with SDXL's
structure: two text encoders (CLIP ViT-L style with quick_gelu, OpenCLIP style with gelu and a
projection), their concatenated context, and the text_time size conditioning.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from tests import tiny_models

SDXL_CONFIGS = {
    "text_encoder": {
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "hidden_size": 32,
        "intermediate_size": 37, "layer_norm_eps": 1e-05, "num_attention_heads": 4,
        "num_hidden_layers": 5, "vocab_size": 49408, "max_position_embeddings": 77,
        "hidden_act": "quick_gelu", "projection_dim": 32,
    },
    "text_encoder_2": {
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "hidden_size": 32,
        "intermediate_size": 37, "layer_norm_eps": 1e-05, "num_attention_heads": 4,
        "num_hidden_layers": 5, "vocab_size": 49408, "max_position_embeddings": 77,
        "hidden_act": "gelu", "projection_dim": 32,
    },
    # As diffusers' SDXL fast tests: 2 blocks, 1 and 2 transformer layers, 8-wide time ids.
    "unet": {
        "block_out_channels": [32, 64], "layers_per_block": 2, "sample_size": 32,
        "in_channels": 4, "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": [2, 4], "use_linear_projection": True,
        "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
        "transformer_layers_per_block": [1, 2],
        "projection_class_embeddings_input_dim": 6 * 8 + 32,  # 6 time ids + pooled text
        "cross_attention_dim": 32 + 32,  # both encoders' hidden states, concatenated
    },
    "vae": {**tiny_models.CONFIGS["sd1"]["vae"], "scaling_factor": 0.13025},
}
TEXT_ENCODERS = {"sd1": ("text_encoder",), "sd2": ("text_encoder",),
                 "sdxl": ("text_encoder", "text_encoder_2")}
CONFIG_FOLDERS = {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl"}
# What the original training code saved beside the weights (noise schedule buffers).
LDM_EXTRAS = ("betas", "alphas_cumprod", "alphas_cumprod_prev")


# --- tiny diffusers models -----------------------------------------------------------------

def tiny_components(variant: str, in_channels: int = 4) -> dict[str, torch.nn.Module]:
    """The tiny model's unet, vae and text encoder(s), with fixed random weights."""
    if variant == "sdxl":
        return _tiny_sdxl(in_channels)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = tiny_models.tiny_diffusers(variant)
    components = {"vae": AutoencoderKL.from_pretrained(folder / "vae"),
                  "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder")}
    if in_channels == 4:
        components["unet"] = UNet2DConditionModel.from_pretrained(folder / "unet")
    else:  # an inpainting UNet of the same family
        torch.manual_seed(0)
        config = {**tiny_models.CONFIGS[variant]["unet"], "in_channels": in_channels}
        components["unet"] = UNet2DConditionModel(**config)
    return components


def _tiny_sdxl(in_channels: int) -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**SDXL_CONFIGS["unet"], "in_channels": in_channels})
    torch.manual_seed(0)
    vae = AutoencoderKL(**SDXL_CONFIGS["vae"])
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SDXL_CONFIGS["text_encoder"]))
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_CONFIGS["text_encoder_2"]))
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2}


def write_configs_root(root: Path) -> Path:
    """A configs root laid out like resources/configs, with the tiny models' architectures."""
    for variant in ("sd1", "sd2"):
        source, folder = tiny_models.tiny_diffusers(variant), root / CONFIG_FOLDERS[variant]
        for file in ("model_index.json", "unet/config.json", "vae/config.json",
                     "text_encoder/config.json", "scheduler/scheduler_config.json"):
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / file, folder / file)
    folder = root / "sdxl"
    for component, module in _tiny_sdxl(4).items():
        (folder / component).mkdir(parents=True)
        if component.startswith("text_encoder"):  # transformers
            module.config.to_json_file(folder / component / "config.json")
        else:
            module.save_config(folder / component)
    real = tiny_models.REPO / "resources" / "configs" / "sdxl"
    (folder / "scheduler").mkdir()
    shutil.copyfile(real / "scheduler" / "scheduler_config.json",
                    folder / "scheduler" / "scheduler_config.json")
    shutil.copyfile(real / "model_index.json", folder / "model_index.json")
    return root


# --- diffusers -> ldm names ----------------------------------------------------------------

UNET_RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
                     "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                     "conv_shortcut": "skip_connection"}
UNET_TOP_NAMES = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2":
                  "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
                  "add_embedding.linear_2": "label_emb.0.2", "conv_in": "input_blocks.0.0",
                  "conv_norm_out": "out.0", "conv_out": "out.2"}


def ldm_unet(state: dict, config: dict) -> dict:
    """UNet2DConditionModel tensors under the original openaimodel.UNetModel names."""
    per_block = config["layers_per_block"]
    has_attention = ["CrossAttn" in block for block in config["up_block_types"]]
    result = {}
    for key, value in state.items():
        result["model.diffusion_model." + _ldm_unet_key(key, per_block, has_attention)] = value
    return result


def _ldm_unet_key(key: str, per_block: int, up_has_attention: list[bool]) -> str:
    for diffusers_name, ldm_name in UNET_TOP_NAMES.items():
        if key.startswith(diffusers_name + "."):
            return ldm_name + key[len(diffusers_name):]
    parts = key.split(".")
    if parts[0] == "mid_block":  # resnet, attention, resnet
        index = int(parts[2]) * 2 if parts[1] == "resnets" else 1
        return _ldm_layer(f"middle_block.{index}", parts[1], parts[3:])
    block, kind = int(parts[1]), parts[2]
    # Each original block is a list: [resnet] or [resnet, attention] (+ a sampler).
    slot = 0 if kind == "resnets" else 1
    if parts[0] == "down_blocks":
        first = 1 + block * (per_block + 1)  # input_blocks.0 is conv_in
        if kind == "downsamplers":  # the last input block of a level is the downsampler
            return f"input_blocks.{first + per_block}.0.op." + ".".join(parts[5:])
        return _ldm_layer(f"input_blocks.{first + int(parts[3])}.{slot}", kind, parts[4:])
    first = block * (per_block + 1)
    if kind == "upsamplers":  # the upsampler joins the level's last output block
        position = 2 if up_has_attention[block] else 1
        return f"output_blocks.{first + per_block}.{position}.conv." + ".".join(parts[5:])
    return _ldm_layer(f"output_blocks.{first + int(parts[3])}.{slot}", kind, parts[4:])


def _ldm_layer(prefix: str, kind: str, rest: list[str]) -> str:
    if kind == "resnets":
        name = ".".join(rest[:-1])
        return f"{prefix}.{UNET_RESNET_NAMES.get(name, name)}.{rest[-1]}"
    # Spatial transformers keep diffusers' inner names (proj_in, transformer_blocks, ...).
    return f"{prefix}." + ".".join(rest)


VAE_TOP_NAMES = {"encoder.conv_norm_out": "encoder.norm_out",
                 "decoder.conv_norm_out": "decoder.norm_out"}
VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
                       "to_out.0": "proj_out"}


def ldm_vae(state: dict, config: dict) -> dict:
    """AutoencoderKL tensors under the original ldm AutoencoderKL names."""
    levels = len(config["up_block_types"])
    result = {}
    for key, value in state.items():
        ldm_key, value = _ldm_vae_entry(key, value, levels)
        result["first_stage_model." + ldm_key] = value
    return result


def _ldm_vae_entry(key: str, value, levels: int):
    for diffusers_name, ldm_name in VAE_TOP_NAMES.items():
        if key.startswith(diffusers_name + "."):
            return ldm_name + key[len(diffusers_name):], value
    parts = key.split(".")
    if len(parts) < 3 or parts[1] not in ("down_blocks", "up_blocks", "mid_block"):
        return key, value  # conv_in, conv_out, quant_conv, post_quant_conv
    coder = parts[0]
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            return f"{coder}.mid.block_{int(parts[3]) + 1}." + _vae_resnet(parts[4:]), value
        inner = ".".join(parts[4:-1])
        # The original attention projects with 1x1 convolutions.
        return (f"{coder}.mid.attn_1.{VAE_ATTENTION_NAMES[inner]}.{parts[-1]}",
                value if value.dim() == 1 else value[:, :, None, None])
    level = int(parts[2])
    if parts[1] == "up_blocks":  # the original counts decoder levels from the bottom
        level = levels - 1 - level
    name = "down" if parts[1] == "down_blocks" else "up"
    if parts[3] in ("downsamplers", "upsamplers"):
        sampler = "downsample" if name == "down" else "upsample"
        return f"{coder}.{name}.{level}.{sampler}.conv.{parts[-1]}", value
    return f"{coder}.{name}.{level}.block.{parts[4]}." + _vae_resnet(parts[5:]), value


def _vae_resnet(rest: list[str]) -> str:
    name = ".".join(rest[:-1])
    return f"{'nin_shortcut' if name == 'conv_shortcut' else name}.{rest[-1]}"


def ldm_clip(state: dict, prefix: str) -> dict:
    """OpenAI CLIP: the original code stored the transformers model as it is."""
    result = {f"{prefix}text_model.{key.removeprefix('text_model.')}": value
              for key, value in state.items()}
    # transformers before 4.31 saved its position index buffer; many checkpoints carry it.
    position_ids = torch.arange(77, device=next(iter(state.values())).device)[None]
    result[f"{prefix}text_model.embeddings.position_ids"] = position_ids
    return result


OPEN_CLIP_NAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
                   "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}


def ldm_open_clip(state: dict, prefix: str, extra_layer: bool) -> dict:
    """OpenCLIP's text tower: fused q/k/v, resblocks, a (width x projection) matrix.

    ``extra_layer`` adds the final resblock SD 2.x trains with but never runs (it conditions on
    the penultimate layer), as SD 2.x checkpoints carry it."""
    state = {key.removeprefix("text_model."): value for key, value in state.items()}
    device = next(iter(state.values())).device
    result = {
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("final_layer_norm.bias"),
        prefix + "logit_scale": torch.ones((), device=device),
    }
    width = result[prefix + "token_embedding.weight"].shape[1]
    if "text_projection.weight" in state:
        result[prefix + "text_projection"] = state.pop("text_projection.weight").T.contiguous()
    else:  # SD 2.x's unused projection
        result[prefix + "text_projection"] = torch.zeros(width, width, device=device)
    layers = {}
    for key, value in state.items():
        match = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        layers.setdefault(int(match[1]), {})[f"{match[2]}.{match[3]}"] = value
    if extra_layer:
        layers[len(layers)] = {key: torch.randn_like(value) for key, value in layers[0].items()}
    for number, layer in layers.items():
        result.update(_open_clip_layer(layer, f"{prefix}transformer.resblocks.{number}."))
    return result


def _open_clip_layer(layer: dict, prefix: str) -> dict:
    result = {}
    for kind in ("weight", "bias"):
        result[f"{prefix}attn.in_proj_{kind}"] = torch.cat(
            [layer.pop(f"self_attn.{name}_proj.{kind}") for name in ("q", "k", "v")])
    for key, value in layer.items():
        name, kind = key.rsplit(".", 1)
        result[f"{prefix}{OPEN_CLIP_NAMES[name]}.{kind}"] = value
    return result


def ldm_checkpoint(variant: str, components: dict[str, torch.nn.Module]) -> dict:
    """The whole model as one original-layout state dict."""
    unet, vae = components["unet"], components["vae"]
    state = {**ldm_unet(unet.state_dict(), unet.config), **ldm_vae(vae.state_dict(), vae.config)}
    device = next(iter(state.values())).device
    for name in LDM_EXTRAS:
        state[name] = torch.linspace(0.0, 1.0, 1000, device=device)
    text = components["text_encoder"].state_dict()
    if variant == "sd1":
        state.update(ldm_clip(text, "cond_stage_model.transformer."))
    elif variant == "sd2":
        state.update(ldm_open_clip(text, "cond_stage_model.model.", extra_layer=True))
    else:
        state.update(ldm_clip(text, "conditioner.embedders.0.transformer."))
        state.update(ldm_open_clip(components["text_encoder_2"].state_dict(),
                                   "conditioner.embedders.1.model.", extra_layer=False))
    return state


def save_checkpoint(state: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


def write_tiny_checkpoint(variant: str, path: Path, in_channels: int = 4) -> Path:
    return save_checkpoint(ldm_checkpoint(variant, tiny_components(variant, in_channels)), path)


# --- reading a converted folder back --------------------------------------------------------

def load_component(folder: Path, component: str):
    """Load a converted component as diffusers/transformers would, insisting on every tensor."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL,
               "text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}
    model, info = classes[component].from_pretrained(
        folder / component, local_files_only=True, use_safetensors=True,
        output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model


def assert_same_weights(converted, original) -> None:
    expected, found = original.state_dict(), converted.state_dict()
    assert set(found) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(found[key], tensor), key


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
