"""Build a real-size Stable Diffusion 1.5 diffusers folder with random weights (no download).

Usage: ``python tests/benchmarks/make_random_sd15.py OUTPUT_FOLDER [--seed N]``

The architecture is SD 1.5's own, read from ``resources/configs/sd15/`` (UNet 860M, VAE 84M,
CLIP ViT-L/14 text encoder 123M parameters; PNDM scheduler config as SD 1.5 ships it), and the
tokenizer is ``resources/tokenizers/clip/``. The folder is laid out as the hub ships SD 1.5:
``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``,
each config written byte for byte from ``resources/configs/sd15``, weights as
``.safetensors`` (about 4.3 GB in float32), no safety checker or feature extractor.

Weights are the libraries' own default initialisation after ``torch.manual_seed(seed)`` for
each component (deterministic for a given torch/diffusers/transformers version; about 45 s on
2 cores). Norm layers keep weight 1 and bias 0, so activations stay in range: the weights are
finite and the pictures are noise, but not constant. One component is in memory at a time
(peak about 4 GB, the UNet). The folder is built beside OUTPUT_FOLDER and renamed into place
at the end, so an interrupted run leaves no half-built model behind.

This is a benchmark helper, not a test; pytest does not collect ``tests/benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "resources" / "configs" / "sd15"
CLIP_TOKENIZER = REPO / "resources" / "tokenizers" / "clip"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


def read_config(relative: str) -> dict:
    return json.loads((CONFIGS / relative).read_text(encoding="utf-8"))


def _check_finite(name: str, module) -> int:
    import torch

    count = 0
    for parameter_name, parameter in module.named_parameters():
        if not torch.isfinite(parameter).all():
            raise RuntimeError(f"{name}: {parameter_name} has non-finite values")
        count += parameter.numel()
    return count


def _save(name: str, module, folder: Path, config_file: str) -> None:
    """Save ``module`` as safetensors, then put the shipped config file in place."""
    count = _check_finite(name, module)
    module.save_pretrained(folder / name, safe_serialization=True)
    # The libraries write every default into config.json; the hub files name only some.
    shutil.copyfile(CONFIGS / name / config_file, folder / name / config_file)
    size = sum(path.stat().st_size for path in (folder / name).iterdir())
    print(f"  {name}: {count / 1e6:.1f}M parameters, {size / 1e9:.2f} GB", flush=True)


def build_unet(folder: Path, seed: int) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(read_config("unet/config.json"))
    _save("unet", unet.eval(), folder, "config.json")


def build_vae(folder: Path, seed: int) -> None:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed + 1)
    vae = AutoencoderKL.from_config(read_config("vae/config.json"))
    _save("vae", vae.eval(), folder, "config.json")


def build_text_encoder(folder: Path, seed: int) -> None:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed + 2)
    config = CLIPTextConfig.from_json_file(str(CONFIGS / "text_encoder" / "config.json"))
    text_encoder = CLIPTextModel(config)
    _save("text_encoder", text_encoder.eval(), folder, "config.json")


def write_small_files(folder: Path) -> None:
    (folder / "scheduler").mkdir()
    shutil.copyfile(CONFIGS / "scheduler" / "scheduler_config.json",
                    folder / "scheduler" / "scheduler_config.json")
    (folder / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
        shutil.copyfile(CLIP_TOKENIZER / name, folder / "tokenizer" / name)
    index = read_config("model_index.json")
    index["safety_checker"] = [None, None]
    index["feature_extractor"] = [None, None]
    index["requires_safety_checker"] = False
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n",
                                             encoding="utf-8")


def build(output: Path, seed: int = 0) -> Path:
    """Write the folder ``output`` (which must not exist or be empty)."""
    import torch

    output = Path(output).resolve()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise SystemExit(f"{output} already exists and is not an empty folder.")
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    building = Path(tempfile.mkdtemp(prefix=f".{output.name}-building-", dir=output.parent))
    try:
        started = time.monotonic()
        write_small_files(building)
        for step in (build_text_encoder, build_vae, build_unet):
            step(building, seed)
        if output.exists():
            output.rmdir()
        building.chmod(0o755)
        building.rename(output)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    print(f"Wrote {output} in {time.monotonic() - started:.0f} s (seed {seed}).")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the folder to create")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (default 0)")
    arguments = parser.parse_args(argv)
    build(arguments.output, arguments.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
