"""Renders Easel's SVG app icon at the hicolor theme's sizes, with Qt's SVG renderer.

    python render_icons.py resources/icons/easel.svg OUT   ->  OUT/hicolor/SIZExSIZE/apps/easel.png
                                                             and OUT/hicolor/scalable/apps/easel.svg
Runs in the build environment (PySide6 is there); QT_QPA_PLATFORM=offscreen needs no screen.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PySide6.QtGui import QGuiApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # installers/, for svg_icon
from svg_icon import draw  # noqa: E402

SIZES = (16, 32, 48, 64, 128, 256, 512)


def render(svg: Path, out: Path) -> None:
    for size in SIZES:
        image = draw(svg, size)
        target = out / "hicolor" / f"{size}x{size}" / "apps" / "easel.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(target), "PNG"):
            raise SystemExit(f"render_icons: could not write {target}")
    scalable = out / "hicolor" / "scalable" / "apps"
    scalable.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(svg, scalable / "easel.svg")


if __name__ == "__main__":
    app = QGuiApplication(sys.argv[:1])
    render(Path(sys.argv[1]), Path(sys.argv[2]))
