"""The IP-Adapter kind: adapters that carry a reference picture's look and subject into the
pictures a model makes (image prompts).

Recognised by content (engine.export.ip_adapter): a ``.safetensors`` file or a pickle with
both an image projection (``image_proj.…``) and attention layers (``ip_adapter.{n}.to_k_ip
.weight``); its family is the width of those layers (768 SD 1.x, 2048 SDXL), its variant
"plus" when the projection is a Resampler (``image_proj.latents``). Installed as the
projection graph, the layers' weights and ``easel.json`` (engine.image_prompt.description),
which names the CLIP vision encoder width it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desktop.model_kinds.kind import (
    InstalledModel,
    Progress,
    ShouldStop,
    folder_size,
    kind_in_description,
    weight_names,
)
from engine.description import FAMILY_NAMES
from engine.export.ip_adapter import is_adapter_names
from engine.image_prompt.description import (
    DESCRIPTION_FILE,
    IP_ADAPTER_KIND,
    read_adapter_description,
)

name = IP_ADAPTER_KIND
noun = "an IP-Adapter"
fallback_formats: tuple[str, ...] = ()


def recognises(source: Path, format: str) -> bool:
    names = weight_names(source, format)
    return names is not None and is_adapter_names(names)


def needs_exporter(source: Path, format: str) -> bool:
    return True  # the projection is exported to ONNX with torch


def import_into(source: Path, building: Path, progress: Progress | None,
                should_stop: ShouldStop | None, *, family: str | None = None,
                **_other_kinds_options: Any) -> None:
    from engine.export.ip_adapter import import_ip_adapter

    if progress is not None:
        progress("Exporting the IP-Adapter's image projection", 1, 1)
    import_ip_adapter(Path(source), Path(building), family)


def is_installed_folder(folder: Path) -> bool:
    return kind_in_description(Path(folder) / DESCRIPTION_FILE) == name


def describe(folder: Path) -> InstalledModel:
    folder = Path(folder)
    description = read_adapter_description(folder)
    plus = " plus" if description.variant == "plus" else ""
    use = (f"IP-Adapter{plus} for {FAMILY_NAMES[description.family]}: carries a reference "
           f"picture's look into the picture (needs an image encoder of width "
           f"{description.encoder_width})")
    return InstalledModel(folder.name, description.family, "", folder_size(folder), folder,
                          kind=name, use=use, licence=description.licence)


def use_with(model: str) -> str:
    return f'easel generate --image-prompt "{model}:PICTURE" "PROMPT"'
