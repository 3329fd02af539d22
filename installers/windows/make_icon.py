"""Renders Easel's SVG icon into a Windows .ico at the sizes Explorer and the taskbar use.

    QT_QPA_PLATFORM=offscreen python make_icon.py resources/icons/easel.svg easel.ico

Each size is drawn from the SVG (not shrunk from the largest), with Qt's SVG renderer and
Pillow, both already in the build environment as the app's own dependencies.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # installers/, for svg_icon
from svg_icon import draw  # noqa: E402

SIZES = (16, 20, 24, 32, 40, 48, 64, 128, 256)


def render(svg: Path, size: int):
    """The SVG drawn on a transparent square of ``size`` pixels, as a Pillow RGBA image."""
    from PIL import Image
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    image = draw(svg, size)
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return Image.open(io.BytesIO(bytes(data))).convert("RGBA")


def main(argv: list[str]) -> int:
    from PySide6.QtGui import QGuiApplication

    svg, target = Path(argv[0]), Path(argv[1])
    app = QGuiApplication([])  # noqa: F841 (the renderer needs one, for fonts)
    images = [render(svg, size) for size in SIZES]
    largest = images[-1]
    largest.save(target, format="ICO", sizes=[(size, size) for size in SIZES],
                 append_images=images[:-1])
    print(f"make_icon: {target} ({', '.join(map(str, SIZES))} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
