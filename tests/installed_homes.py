"""Data folders with tiny models installed, for the tests of controls, image prompts and
background replacement: each module builds one as a template through ``easel models import``
(seconds) and each test works on a copy of it (milliseconds), so no test sees another's
pictures or models. Also the pictures those tests steer with."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.cli import main
from tests import tiny_models

ENCODER = "clip-vision"  # the name the tiny CLIP image encoder is imported under


@contextmanager
def filling(template: Path) -> Iterator[Path]:
    """``template`` as the data folder, the tiny SD 1.x imported into it as "tiny"; yields the
    folder beside it, where the other models' sources are written."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EASEL_HOME", str(template))
        assert main(["models", "import", str(tiny_models.tiny_diffusers("sd1")), "--name",
                     "tiny"]) == 0
        yield template.parent


def home_with_ip_adapter(template: Path) -> Path:
    """A data folder with the tiny SD 1.x, a base IP-Adapter for it and its image encoder."""
    from tests import tiny_ip_adapters

    hub = tiny_ip_adapters.save_hub_layout(template.parent / "hub")
    with filling(template):
        # The tiny adapter's widths fit no real family: the user says which.
        assert main(["models", "import", str(hub / tiny_ip_adapters.BASE_FILE), "--family",
                     "sd1"]) == 0
        assert main(["models", "import", str(hub / "image_encoder" / "model.safetensors"),
                     "--name", ENCODER]) == 0
    return template


def copied_home(template: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ``template`` at ``home``, the data folder from now on."""
    shutil.copytree(template, home)
    monkeypatch.setenv("EASEL_HOME", str(home))
    return home


def save_shapes(path: Path) -> Path:
    """A picture with clear edges (a bright disc and bar on a dark ground) at ``path``."""
    y, x = np.mgrid[0:48, 0:64]
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[(x - 20) ** 2 + (y - 20) ** 2 < 12**2] = (230, 200, 40)
    picture[30:40, 35:60] = (40, 120, 220)
    Image.fromarray(picture).save(path)
    return path


def save_reference(path: Path) -> Path:
    """A reference picture of noise, 96×80, at ``path``."""
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)
    return path
