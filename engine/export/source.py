"""Checks a diffusers Stable Diffusion folder before anything is loaded from it, and describes it.

Pure JSON and file-name checks (no torch): a folder is refused with one sentence before any
weights are read, and nothing that ships with a model is ever imported or unpickled.

Families: SD 1.x / 2.x (one CLIP text encoder) and SDXL (two, the second with a projection,
and a UNet conditioned on the image size). Few-step models are recognised from their configs:
LCM by the UNet's guidance-embedding input (``time_cond_proj_dim``) or an LCMScheduler, turbo
(SD-Turbo, SDXL-Turbo, and alike, e.g. SDXL-Lightning) by an Euler scheduler with "trailing"
timestep spacing. Nothing in a turbo folder says so for certain, so the importer can be told
(``distillation`` of ``export_diffusers_folder``). Inpainting and InstructPix2Pix UNets are
recognised by their input channels and labelled in the description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.description import ModelDescription
from engine.errors import ModelError
from engine.images import SD_LATENT_RGB_FACTORS

# The pipelines whose folders Easel imports, and whether they are SDXL ones.
PIPELINE_CLASSES = {
    "StableDiffusionPipeline": False,
    "LatentConsistencyModelPipeline": False,
    "StableDiffusionInpaintPipeline": False,
    "StableDiffusionInstructPix2PixPipeline": False,
    "StableDiffusionXLPipeline": True,
    "StableDiffusionXLInpaintPipeline": True,
    "StableDiffusionXLInstructPix2PixPipeline": True,
}
TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")
# The component each model_index.json entry must name: (library, accepted classes).
COMPONENTS = {
    "unet": ("diffusers", ("UNet2DConditionModel",)),
    "vae": ("diffusers", ("AutoencoderKL",)),
    "text_encoder": ("transformers", ("CLIPTextModel",)),
    "tokenizer": ("transformers", TOKENIZER_CLASSES),
    "scheduler": ("diffusers", None),  # any diffusers scheduler: only its config is copied
}
SDXL_COMPONENTS = {
    **COMPONENTS,
    "text_encoder_2": ("transformers", ("CLIPTextModelWithProjection",)),
    "tokenizer_2": ("transformers", TOKENIZER_CLASSES),
}
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
SDXL_WEIGHT_COMPONENTS = (*WEIGHT_COMPONENTS, "text_encoder_2")
CODE_SUFFIXES = (".py", ".pyc", ".pyo")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
PREDICTION_TYPES = ("epsilon", "v_prediction")

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_SCHEDULER = "dpmpp_2m_karras"
SDXL_DEFAULT_GUIDANCE = 5.0  # diffusers' StableDiffusionXLPipeline default
# Few-step models, as their model cards run them: turbo in 1 step without guidance; LCM in 4
# steps, its guidance scale going into the UNet's embedding (8 as LCM-Dreamshaper's card),
# or off for a model without that input (an LCM-LoRA merged into an ordinary UNet).
TURBO_STEPS = 1
LCM_STEPS = 4
LCM_GUIDANCE = 8.0
AUTO = "auto"  # detect the distillation from the configs
DISTILLATIONS = ("turbo", "lcm")
# diffusers' AutoencoderKL default; configs written before diffusers 0.10 do not name it.
DEFAULT_LATENT_SCALING = 0.18215


@dataclass(frozen=True)
class SourceModel:
    """A checked diffusers folder: its configs and how to load its weights."""

    folder: Path
    model_index: dict
    unet: dict
    vae: dict
    text_encoder: dict
    scheduler: dict
    weight_variants: dict[str, str | None]  # component -> diffusers "variant" ("fp16") or None
    text_encoder_2: dict | None = None  # SDXL's second text encoder (with projection)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None


def check_diffusers_folder(folder: Path) -> SourceModel:
    """The configs of a diffusers SD 1.x/2.x/XL folder, or ModelError saying why it is refused."""
    folder = Path(folder)
    name = folder.name
    if not folder.is_dir():
        raise ModelError(f"'{name}' is not a folder.")
    # model_index.json first: a folder given by mistake (a home folder) is not walked whole.
    index = _read_json(folder / "model_index.json", f"'{name}' is not a diffusers model folder "
                       f"(it has no readable model_index.json).")
    _refuse_code(folder)
    is_sdxl = _check_pipeline_class(index, name)
    components = SDXL_COMPONENTS if is_sdxl else COMPONENTS
    for component in components:
        _check_component_entry(index, component, name, components)
    text_encoders = ("text_encoder", "text_encoder_2") if is_sdxl else ("text_encoder",)
    configs = {
        component: _read_component_config(folder, component)
        for component in ("unet", "vae", *text_encoders, "scheduler")
    }
    _check_config_classes(configs, name)
    for tokenizer in ("tokenizer", "tokenizer_2") if is_sdxl else ("tokenizer",):
        _check_tokenizer_files(folder / tokenizer, name)
    variants = {component: _weight_variant(folder / component, component, name)
                for component in (SDXL_WEIGHT_COMPONENTS if is_sdxl else WEIGHT_COMPONENTS)}
    source = SourceModel(folder=folder, model_index=index, weight_variants=variants, **configs)
    _check_shapes_fit(source)
    return source


def _refuse_code(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.suffix in CODE_SUFFIXES and path.is_file():
            relative = path.relative_to(folder).as_posix()
            raise ModelError(f"'{folder.name}' ships Python code ({relative}); Easel never runs "
                             f"code that comes with a model.")


def _read_json(path: Path, missing_sentence: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(missing_sentence) from None
    if not isinstance(data, dict):
        raise ModelError(missing_sentence)
    return data


def _check_pipeline_class(index: dict, name: str) -> bool:
    """Whether the folder is an SDXL one; refuses every pipeline Easel does not import."""
    pipeline = index.get("_class_name")
    if isinstance(pipeline, list):  # ["module", "Class"]: a custom pipeline, i.e. code
        raise ModelError(f"'{name}' uses a custom pipeline; Easel never runs code that comes "
                         f"with a model.")
    if pipeline not in PIPELINE_CLASSES:
        raise ModelError(f"'{name}' is a {pipeline or 'unknown'} model, not a Stable Diffusion "
                         f"1.x/2.x or XL model.")
    return PIPELINE_CLASSES[pipeline]


def _check_component_entry(index: dict, component: str, name: str,
                           components: dict[str, tuple[str, tuple[str, ...] | None]]) -> None:
    library, classes = components[component]
    entry = index.get(component)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] and entry[1]):
        raise ModelError(f"'{name}' has no {component}, so it is not a complete Stable "
                         f"Diffusion model.")
    if entry[0] != library or not isinstance(entry[1], str):
        # Anything but the library's own classes would mean importing the model's code.
        raise ModelError(f"'{name}' uses a custom {component} ({entry[0]}.{entry[1]}); Easel "
                         f"never runs code that comes with a model.")
    if classes is not None and entry[1] not in classes:
        raise ModelError(f"'{name}' has a {entry[1]} {component}; Easel imports Stable "
                         f"Diffusion models with a {classes[0]} there.")


def _read_component_config(folder: Path, component: str) -> dict:
    file = "scheduler_config.json" if component == "scheduler" else "config.json"
    config = _read_json(folder / component / file,
                        f"'{folder.name}' is damaged: {component}/{file} is missing or unreadable.")
    if "auto_map" in config:  # transformers' pointer to modelling code shipped with the model
        raise ModelError(f"'{folder.name}' asks to run its own {component} code; Easel never "
                         f"runs code that comes with a model.")
    return config


def _check_config_classes(configs: dict[str, dict], name: str) -> None:
    expected = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL"}
    for component, class_name in expected.items():
        found = configs[component].get("_class_name")
        if found != class_name:
            raise ModelError(f"'{name}' has a {component} config for {found!r}, not for "
                             f"{class_name}.")
    for component, architecture in (("text_encoder", "CLIPTextModel"),
                                     ("text_encoder_2", "CLIPTextModelWithProjection")):
        text = configs.get(component)
        if text is None:
            continue
        is_clip = (text.get("model_type", "clip_text_model") == "clip_text_model"
                   and (text.get("architectures") or [architecture]) == [architecture])
        if not is_clip:
            raise ModelError(f"'{name}' has a text encoder that is not a {architecture}.")
    if not isinstance(configs["scheduler"].get("_class_name"), str):
        raise ModelError(f"'{name}' has a scheduler config that names no scheduler.")


def _check_tokenizer_files(folder: Path, name: str) -> None:
    has_pair = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not (has_pair or (folder / "tokenizer.json").is_file()):
        raise ModelError(f"'{name}' is damaged: its tokenizer has no vocabulary files.")
    config = folder / "tokenizer_config.json"
    if config.is_file() and "auto_map" in _read_json(
            config, f"'{name}' is damaged: tokenizer/tokenizer_config.json is unreadable."):
        raise ModelError(f"'{name}' asks to run its own tokenizer code; Easel never runs code "
                         f"that comes with a model.")


def _weight_variant(folder: Path, component: str, name: str) -> str | None:
    """None for plain safetensors weights, "fp16" etc. when only a variant is there."""
    stems = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
             "text_encoder": "model", "text_encoder_2": "model"}
    stem = stems[component]
    files = [path.name for path in folder.iterdir()] if folder.is_dir() else []
    if f"{stem}.safetensors" in files or f"{stem}.safetensors.index.json" in files:
        return None
    variants = sorted(file.split(".")[-2] for file in files
                      if file.startswith(f"{stem}.") and file.endswith(".safetensors")
                      and file.count(".") == 2)
    if variants:
        return "fp32" if "fp32" in variants else variants[0]
    if any(file.endswith(PICKLE_SUFFIXES) for file in files):
        raise ModelError(f"'{name}' stores its {component} weights only as pickle (.bin) files; "
                         f"Easel reads safetensors for now, and safe conversion of pickle "
                         f"weights arrives in a later version.")
    raise ModelError(f"'{name}' is damaged: it has no {component} weights.")


def _check_shapes_fit(source: SourceModel) -> None:
    latent = source.vae.get("latent_channels", 4)
    unet_in, unet_out = source.unet.get("in_channels", 4), source.unet.get("out_channels", 4)
    if unet_out != latent or variant(source) is None:
        raise ModelError(f"'{source.name}' has a UNet with {unet_in} input channels for "
                         f"{latent} latent channels, which fits no model Easel knows.")
    hidden = source.text_encoder.get("hidden_size")
    if source.is_sdxl:
        hidden += source.text_encoder_2.get("hidden_size")
    if source.unet.get("cross_attention_dim") != hidden:
        raise ModelError(f"'{source.name}' has a text encoder that does not fit its UNet.")
    _check_size_conditioning(source)
    if source.vae.get("latents_mean") is not None or source.vae.get("latents_std") is not None:
        raise ModelError(f"'{source.name}' has a VAE with a per-channel latent mean, which "
                         f"Easel does not support yet.")
    if prediction_type(source) not in PREDICTION_TYPES:
        raise ModelError(f"'{source.name}' predicts '{prediction_type(source)}', which Easel "
                         f"does not support for Stable Diffusion models.")


def _check_size_conditioning(source: SourceModel) -> None:
    """SDXL's UNet takes the pooled text projection and six size numbers, and only SDXL's."""
    unet = source.unet
    takes_sizes = unet.get("addition_embed_type") == "text_time"
    if not source.is_sdxl:
        if unet.get("addition_embed_type") or unet.get("class_embed_type"):
            raise ModelError(f"'{source.name}' has a UNet with extra conditioning that Easel "
                             f"does not know for a Stable Diffusion 1.x/2.x model.")
        return
    projection = source.text_encoder_2.get("projection_dim", 0)
    expected = 6 * (unet.get("addition_time_embed_dim") or 0) + projection
    if not takes_sizes or unet.get("projection_class_embeddings_input_dim") != expected:
        raise ModelError(f"'{source.name}' has a UNet that does not take SDXL's size and "
                         f"pooled-text conditioning as its text encoders give it.")


def variant(source: SourceModel) -> str | None:
    """What the UNet's input channels say it is (None: nothing Easel knows).

    Inpainting UNets read the noisy latents, the masked picture's latents and the mask (2n + 1
    channels); InstructPix2Pix UNets the noisy latents and the picture's latents (2n).
    """
    latent = source.vae.get("latent_channels", 4)
    channels = source.unet.get("in_channels", 4)
    return {latent: "text-to-image", 2 * latent + 1: "inpainting",
            2 * latent: "instruct-pix2pix"}.get(channels)


def prediction_type(source: SourceModel) -> str:
    # SD 1.x scheduler configs predate the key; diffusers' default is epsilon.
    return source.scheduler.get("prediction_type") or "epsilon"


def family(source: SourceModel) -> str:
    """"sdxl" for two text encoders, else "sd2" for the OpenCLIP text encoder of SD 2.x and
    "sd1" for OpenAI CLIP.

    The text encoder is what defines SD 2: OpenCLIP ViT-H/14 uses exact GELU where OpenAI's
    ViT-L/14 uses quick_gelu. Other signs are not decisive: SD 2.0-base predicts epsilon like
    SD 1.x, both are 512 px and 768 px fine-tunes exist in both, and hidden sizes say nothing
    about tiny or pruned models.
    """
    if source.is_sdxl:
        return "sdxl"
    return "sd2" if source.text_encoder.get("hidden_act") == "gelu" else "sd1"


def distillation(source: SourceModel) -> str | None:
    """"lcm", "turbo" or None, as far as the configs tell (see the module notes)."""
    scheduler = source.scheduler
    if source.unet.get("time_cond_proj_dim") or scheduler.get("_class_name") == "LCMScheduler":
        return "lcm"
    euler = scheduler.get("_class_name") in ("EulerDiscreteScheduler",
                                             "EulerAncestralDiscreteScheduler")
    # Zero-terminal-SNR models also space their steps "trailing", but are not few-step ones.
    if (euler and scheduler.get("timestep_spacing") == "trailing"
            and not scheduler.get("rescale_betas_zero_snr")):
        return "turbo"
    return None


def describe(source: SourceModel, distilled: str | None = AUTO) -> ModelDescription:
    """The model's description; ``distilled`` ("turbo", "lcm" or None) overrides detection."""
    if distilled == AUTO:
        distilled = distillation(source)
    if distilled not in (None, *DISTILLATIONS):
        raise ValueError(f"Unknown distillation {distilled!r}; use one of {DISTILLATIONS} "
                         f"or None.")
    vae_scale = 2 ** (len(source.vae.get("block_out_channels", (0,) * 4)) - 1)
    height, width = _sample_size(source.unet.get("sample_size", 64))
    is_sdxl = source.is_sdxl
    steps, guidance, scheduler = _defaults(source, distilled)
    return ModelDescription(
        family=family(source),
        latent_channels=source.vae.get("latent_channels", 4),
        vae_scale_factor=vae_scale,
        latent_scaling_factor=float(source.vae.get("scaling_factor") or DEFAULT_LATENT_SCALING),
        latent_shift_factor=float(source.vae.get("shift_factor") or 0.0),
        prediction_type=prediction_type(source),
        default_width=width * vae_scale,
        default_height=height * vae_scale,
        default_steps=steps,
        default_guidance=guidance,
        default_scheduler=scheduler,
        text_max_length=source.text_encoder.get("max_position_embeddings", 77),
        preview_rgb_factors=None if is_sdxl else _preview_factors(
            source.vae.get("latent_channels", 4)),
        variant=variant(source),
        text_encoders=2 if is_sdxl else 1,
        text_hidden_state="penultimate" if is_sdxl else "last",
        size_conditioning=is_sdxl,
        # diffusers' SDXL pipelines default to zeros when the folder does not say.
        force_zeros_for_empty_prompt=is_sdxl and bool(
            source.model_index.get("force_zeros_for_empty_prompt", True)),
        guidance_embedding_dim=int(source.unet.get("time_cond_proj_dim") or 0),
        distillation=distilled,
    )


def _defaults(source: SourceModel, distilled: str | None) -> tuple[int, float, str]:
    """(steps, guidance, scheduler) a user gets without asking."""
    if distilled == "lcm":
        guidance = LCM_GUIDANCE if source.unet.get("time_cond_proj_dim") else 1.0
        return LCM_STEPS, guidance, "lcm"
    if distilled == "turbo":
        ancestral = source.scheduler.get("_class_name") == "EulerAncestralDiscreteScheduler"
        return TURBO_STEPS, 0.0, "euler_ancestral" if ancestral else "euler"
    guidance = SDXL_DEFAULT_GUIDANCE if source.is_sdxl else DEFAULT_GUIDANCE
    return DEFAULT_STEPS, guidance, DEFAULT_SCHEDULER


def _preview_factors(latent_channels: int) -> tuple[tuple[float, ...], ...] | None:
    """SD 1.x / 2.x share one 4-channel VAE latent space, so one preview matrix fits both
    (SDXL's VAE has another; its previews show the raw channels until it has its own)."""
    if latent_channels != SD_LATENT_RGB_FACTORS.shape[0]:
        return None
    return tuple(tuple(float(value) for value in row) for row in SD_LATENT_RGB_FACTORS)


def _sample_size(sample_size: int | list[int]) -> tuple[int, int]:
    if isinstance(sample_size, int):
        return sample_size, sample_size
    return int(sample_size[0]), int(sample_size[1])
