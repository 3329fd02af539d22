"""Easel's SVG app icon drawn at one size with Qt's SVG renderer: the one drawing the Linux
icons (linux/render_icons.py), the Windows .ico (windows/make_icon.py) and the macOS .icns
source (macos/make_icon.py) share. Runs in a build environment, where PySide6 is; a
QGuiApplication must exist first (QT_QPA_PLATFORM=offscreen needs no screen)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtSvg import QSvgRenderer


def draw(svg: Path, size: int) -> QImage:
    """The SVG drawn on a transparent square of ``size`` pixels (each size from the SVG itself,
    never shrunk from a larger drawing, so small icons stay sharp)."""
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not an SVG Qt can draw")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image
