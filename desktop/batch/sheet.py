"""The comparison sheet of a grid: every cell's picture in rows (y) and columns (x), the axis
values written beside them, each cell's seed under it, the prompt as the title, and a z axis
as blocks one under another, each with its own title. A cell with no picture is a grey box
saying "failed", so the sheet still comes out.

Pictures keep their pixels: small ones are enlarged by a whole factor (nearest neighbour, so a
256-pixel sheet cell is still readable beside its labels) and only a sheet too large for the
library is shrunk (Lanczos). ``Sheet.layout`` says where everything went.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]  # left, top, width, height

BACKGROUND = (255, 255, 255)
INK = (32, 32, 32)
FAINT_INK = (96, 96, 96)
FAILED = (176, 176, 176)
# Cells smaller than this on their long side are enlarged (a whole factor) for the labels'
# sake; the pictures of all cells together stay within MAX_PICTURES_SIDE a side, well inside
# what the library opens (16,384 a side, Pillow's 89-megapixel limit).
MIN_CELL_SIDE = 256
MAX_PICTURES_SIDE = 7680
_FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
               "/usr/share/fonts/dejavu/DejaVuSans.ttf",  # Fedora, Arch
               "/System/Library/Fonts/Supplemental/Arial.ttf",  # macOS
               "C:/Windows/Fonts/arial.ttf")


@dataclass(frozen=True)
class SheetCell:
    picture: np.ndarray | None  # uint8 (H, W, 3); None for a cell that failed
    seed: int | None
    column: int
    row: int
    block: int


@dataclass(frozen=True)
class SheetLayout:
    """Where things are on the sheet, each as (left, top, width, height)."""

    scale: float  # how each picture was resized
    cells: tuple[Box, ...]  # each cell's picture (or grey box), in the order given
    seeds: tuple[Box, ...]  # the seed line under each cell
    title: Box
    column_labels: tuple[Box, ...]  # every block's, block after block
    row_labels: tuple[Box, ...]  # every block's
    block_titles: tuple[Box, ...]


@dataclass(frozen=True)
class Sheet:
    pixels: np.ndarray
    layout: SheetLayout


def draw_sheet(title: str, labels: Sequence[Sequence[str] | None],
               cells: Sequence[SheetCell]) -> Sheet:
    """``labels``: the x, y and z axes' labels ("steps: 10", ...), None for an axis not used."""
    x_labels, y_labels, z_labels = (list(axis) if axis else [""] for axis in labels)
    has_rows, has_blocks = bool(labels[1]), bool(labels[2])
    pictures = [cell.picture for cell in cells if cell.picture is not None]
    box_w = max((picture.shape[1] for picture in pictures), default=MIN_CELL_SIDE)
    box_h = max((picture.shape[0] for picture in pictures), default=MIN_CELL_SIDE)
    scale = _scale(box_w, box_h, len(x_labels), len(y_labels) * len(z_labels))
    box_w, box_h = max(1, round(box_w * scale)), max(1, round(box_h * scale))

    size = max(14, min(40, round(box_h / 14)))
    font, title_font = _font(size), _font(round(size * 1.3))
    line = _line_height(font)
    gap, margin = max(4, size // 2), size
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_label_w = 0
    if has_rows:
        widest = max(measure.textlength(text, font=font) for text in y_labels)
        row_label_w = min(math.ceil(widest), max(box_w, 12 * size))
    left0 = margin + (row_label_w + gap if has_rows else 0)
    width = left0 + len(x_labels) * (box_w + gap) - gap + margin
    title_lines = _wrapped(title, title_font, width - 2 * margin, 2, measure)
    column_lines = [_wrapped(text, font, box_w, 3, measure) for text in x_labels]
    column_h = max(len(lines) for lines in column_lines) * line
    row_lines = [_wrapped(text, font, row_label_w, 4, measure) for text in y_labels]

    # Everything's place, top to bottom; then everything drawn at its place.
    top = margin
    title_box = (margin, top, width - 2 * margin, len(title_lines) * _line_height(title_font))
    top += title_box[3] + gap * 2
    cell_boxes: dict[tuple[int, int, int], tuple[int, int]] = {}
    texts: list[tuple[Box, list[str], ImageFont.ImageFont, tuple[int, int, int], bool]] = [
        (title_box, title_lines, title_font, INK, False)]
    column_boxes, row_boxes, block_boxes = [], [], []
    for block, block_label in enumerate(z_labels):
        if has_blocks:
            block_box = (margin, top, width - 2 * margin, _line_height(title_font))
            block_boxes.append(block_box)
            texts.append((block_box, [block_label], title_font, INK, False))
            top += block_box[3] + gap
        for column, lines in enumerate(column_lines):
            # Bottom-aligned: a one-line label sits on its cell as a wrapped one does.
            label_h = len(lines) * line
            box = (left0 + column * (box_w + gap), top + column_h - label_h, box_w, label_h)
            column_boxes.append(box)
            texts.append((box, lines, font, INK, True))
        top += column_h + gap
        for row, lines in enumerate(row_lines):
            if has_rows:  # beside the middle of its row, as A1111 writes them
                label_h = len(lines) * line
                box = (margin, top + max(0, (box_h - label_h) // 2), row_label_w, label_h)
                row_boxes.append(box)
                texts.append((box, lines, font, INK, False))
            for column in range(len(x_labels)):
                cell_boxes[(block, row, column)] = (left0 + column * (box_w + gap), top)
            top += box_h + line + gap
        top += gap * 2
    height = top - gap * 2 - gap + margin

    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    placed, seed_boxes = [], []
    for cell in cells:
        left, top = cell_boxes[(cell.block, cell.row, cell.column)]
        placed.append(_place(sheet, draw, cell.picture, scale, (left, top, box_w, box_h), font))
        seed_box = (left, top + box_h, box_w, line)
        seed_boxes.append(seed_box)
        seed = "" if cell.seed is None else f"seed {cell.seed}"
        texts.append((seed_box, [seed], font, FAINT_INK, True))
    for box, lines, text_font, colour, centred in texts:
        _write(draw, box, lines, text_font, colour, centred)
    layout = SheetLayout(scale, tuple(placed), tuple(seed_boxes), title_box, tuple(column_boxes),
                         tuple(row_boxes), tuple(block_boxes))
    return Sheet(np.asarray(sheet), layout)


def _scale(box_w: int, box_h: int, columns: int, rows: int) -> float:
    """A whole factor up for small pictures, a fraction down for a sheet too large."""
    fit = min(MAX_PICTURES_SIDE / (columns * box_w), MAX_PICTURES_SIDE / (rows * box_h))
    if fit < 1:
        return fit
    return float(max(1, min(MIN_CELL_SIDE // max(box_w, box_h), math.floor(fit))))


def scaled(picture: np.ndarray, scale: float) -> Image.Image:
    """A cell's picture as the sheet shows it."""
    image = Image.fromarray(picture)
    if scale == 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return image.resize(size, method)


def _place(sheet: Image.Image, draw: ImageDraw.ImageDraw, picture: np.ndarray | None,
           scale: float, box: Box, font: ImageFont.ImageFont) -> Box:
    """The picture centred in its box (cells of other sizes keep their proportions), or a
    grey box saying "failed"; returns where it went."""
    left, top, width, height = box
    if picture is None:
        draw.rectangle((left, top, left + width - 1, top + height - 1), fill=FAILED)
        _write(draw, (left, top + (height - _line_height(font)) // 2, width,
                      _line_height(font)), ["failed"], font, INK, True)
        return box
    image = scaled(picture, scale)
    where = (left + (width - image.width) // 2, top + (height - image.height) // 2)
    sheet.paste(image, where)
    return (*where, image.width, image.height)


def _write(draw: ImageDraw.ImageDraw, box: Box, lines: list[str], font: ImageFont.ImageFont,
           colour: tuple[int, int, int], centred: bool) -> None:
    left, top, width, _ = box
    for number, text in enumerate(lines):
        offset = (width - draw.textlength(text, font=font)) / 2 if centred else 0
        draw.text((left + max(0, offset), top + number * _line_height(font)), text,
                  font=font, fill=colour)


def _wrapped(text: str, font: ImageFont.ImageFont, width: int, most: int,
             measure: ImageDraw.ImageDraw) -> list[str]:
    """``text`` in lines no wider than ``width``, at most ``most`` of them (the last cut with
    an ellipsis): a long prompt as a label stays inside its column."""
    def fits(candidate: str) -> bool:
        return measure.textlength(candidate, font=font) <= width

    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    lines = lines or [""]
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] += "…"
    return [_cut(text_line, fits) for text_line in lines]


def _cut(text: str, fits) -> str:
    if fits(text):
        return text
    while len(text) > 1 and not fits(text + "…"):
        text = text[:-1]
    return text + "…"


def _line_height(font: ImageFont.ImageFont) -> int:
    return round(getattr(font, "size", 14) * 1.25)


@functools.cache
def _font(size: int) -> ImageFont.ImageFont:
    path = _font_file()
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:
            pass
    return ImageFont.load_default(size=size)


@functools.cache
def _font_file() -> Path | None:
    """DejaVu Sans (or the system's sans-serif) as fontconfig finds it, else a known path."""
    if shutil.which("fc-match"):
        try:
            found = subprocess.run(["fc-match", "-f", "%{file}", "DejaVu Sans"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found.lower().endswith((".ttf", ".otf")) and Path(found).is_file():
            return Path(found)
    return next((Path(name) for name in _FONT_FILES if Path(name).is_file()), None)
