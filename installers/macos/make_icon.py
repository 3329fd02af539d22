"""Renders Easel's SVG icon into one large PNG, from which build.sh makes the .icns with sips
and iconutil (neither reads SVG).

    QT_QPA_PLATFORM=offscreen python make_icon.py resources/icons/easel.svg easel.png 1024
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # installers/, for svg_icon
from svg_icon import draw  # noqa: E402


def main(argv: list[str]) -> int:
    from PySide6.QtGui import QGuiApplication

    svg, target, size = Path(argv[0]), Path(argv[1]), int(argv[2])
    app = QGuiApplication([])  # noqa: F841 (the renderer needs one, for fonts)
    image = draw(svg, size)
    if not image.save(str(target), "PNG"):
        raise SystemExit(f"make_icon: could not write {target}")
    print(f"make_icon: {target} ({size} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
