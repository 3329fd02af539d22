"""A request's image prompts from what the user gave (``--image-prompt`` on the command line,
the window's Image prompt panel, "keep the meaning" variations): the installed IP-Adapter that
fits the model and the image encoder that fits the adapter. Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from desktop.model_store import ModelStore
from engine.errors import BadRequest, ModelError
from engine.image_prompt.description import (
    IMAGE_ENCODER_KIND,
    IP_ADAPTER_KIND,
    read_adapter_description,
    read_encoder_description,
)
from engine.image_prompt.prompt import ImagePrompt, reference_pixels
from engine.images import PictureInput


def make_image_prompts(store: ModelStore, family: str,
                       pictures: Sequence[tuple[PictureInput | Path, float]],
                       adapter: str | None = None) -> tuple[ImagePrompt, ...]:
    """One image prompt per (picture, weight), all through the same adapter: the one named,
    else the one installed for ``family``; and the encoder that adapter reads."""
    if not pictures:
        return ()
    folder = find_adapter(store, family, adapter)
    encoder = find_encoder(store, folder)
    # Each file is read once, here: the engine encodes the pixels and the library keeps them
    # (engine.pipelines.guides.input_pictures) without opening the file again.
    return tuple(ImagePrompt(folder, encoder, reference_pixels(picture), weight)
                 for picture, weight in pictures)


def find_adapter(store: ModelStore, family: str, name: str | None = None) -> Path:
    """The installed IP-Adapter named ``name``, else the one for ``family`` (a "plus" one
    before a base one when both are there: it carries more of the picture)."""
    if name is not None:
        try:
            return store.path_of(name, IP_ADAPTER_KIND)
        except ModelError:
            raise BadRequest(f"There is no installed IP-Adapter called '{name}'; 'easel "
                             f"models list' shows them.") from None
    fitting = []
    for model in store.installed(IP_ADAPTER_KIND):
        try:
            description = read_adapter_description(model.path)
        except ModelError:
            continue  # damaged: `easel models check` says why
        if description.family == family:
            fitting.append((description.variant != "plus", model.name, model.path))
    if not fitting:
        raise BadRequest(f"An image prompt needs an IP-Adapter for this model's family "
                         f"({family}) and its image encoder; import them (easel models "
                         f"import FILE), see the Image prompts document.")
    return min(fitting)[2]


def find_encoder(store: ModelStore, adapter: Path) -> Path:
    """The installed image encoder whose output the adapter reads (by its width)."""
    needed = read_adapter_description(adapter)
    for model in store.installed(IMAGE_ENCODER_KIND):
        try:
            description = read_encoder_description(model.path)
        except ModelError:
            continue
        has = description.projection if needed.variant == "base" else description.width
        if has == needed.encoder_width:
            return model.path
    raise BadRequest(f"The IP-Adapter '{adapter.name}' needs the CLIP image encoder it was "
                     f"trained with ({needed.encoder_width} wide), and none installed fits; "
                     f"import it (easel models import FOLDER).")
