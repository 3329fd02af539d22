"""``easel gallery check FILE``: what any PNG (Easel's or not) says about how it was made — its
Content Credentials (valid, changed since signing, or none), the XMP source type, and whether
it carries Easel's invisible watermark — and the same lines for ``easel gallery show``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from desktop import paths
from desktop.library.images import load_pixels, open_image
from desktop.picture_info import credentials_lines
from desktop.provenance import xmp
from desktop.provenance.policy import Provenance
from desktop.provenance.watermark import find_watermark


def add_command(actions: argparse._SubParsersAction) -> None:
    check = actions.add_parser(
        "check", help="read a PNG's Content Credentials, source type and watermark")
    check.add_argument("files", nargs="+", type=Path, help="PNG files (from Easel or not)")
    check.set_defaults(run=_check)


def _check(arguments: argparse.Namespace) -> int:
    own_serial = Provenance(paths.data_dir()).serial_number()  # reads; makes no key
    for number, path in enumerate(arguments.files):
        if number:
            print()
        print(f"{path}:")
        for line in credentials_lines(path, own_serial):
            print(f"  {line}")
        with open_image(path, ("PNG",)) as image:  # a file that is no PNG: one sentence
            packet = image.info.get(xmp.KEY)
            picture = load_pixels(image, path.name)
            # The mark lives in the colours: a grey or paletted picture carries none.
            colours = np.asarray(picture.convert("RGB")) if picture.mode in (
                "RGB", "RGBA", "RGBa") else None
        source_type = xmp.digital_source_type(packet) if isinstance(packet, str) else None
        print(f"  XMP source type: {source_type.rsplit('/', 1)[-1] if source_type else 'none'}")
        marked = colours is not None and find_watermark(colours)
        print(f"  invisible watermark: {'Easel' if marked else 'none found'}")
    return 0
