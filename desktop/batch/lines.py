"""Batch files: JSON Lines or CSV, one job a line, with any of generate's settings.

JSON Lines: one object a line, e.g. ``{"prompt": "a red fox", "steps": 20, "count": 2}``;
blank lines and lines starting with ``#`` are skipped. CSV: a header row naming the settings,
then one job a row; an empty cell leaves that setting at its default. Every line is checked
before any work, and the first bad one is one sentence naming its line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BadRequest

MAX_FILE_BYTES = 64 * 1024 * 1024  # a file of prompts, not of pictures

# The operations a line can ask for (``operation``), as the commands of the same names.
OPERATIONS = ("generate", "edit", "variations", "inpaint", "outpaint", "instruct")
# Those that start from a picture (``source``).
FROM_PICTURE = ("edit", "variations", "inpaint", "outpaint", "instruct")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("text")
    return value


def _whole(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError("a whole number")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError("a number")


def _yes_no(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0"):
        return False
    raise ValueError("true or false")


# Every setting a line may hold, and how its value is read ("what it must be" on failure).
SETTINGS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "operation": (_text, "text"),
    "prompt": (_text, "text"),
    "negative_prompt": (_text, "text"),
    "model": (_text, "text"),
    "width": (_whole, "a whole number"),
    "height": (_whole, "a whole number"),
    "steps": (_whole, "a whole number"),
    "guidance": (_number, "a number"),
    "scheduler": (_text, "text"),
    "seed": (_whole, "a whole number"),
    "count": (_whole, "a whole number"),
    "emphasis": (_text, "text"),
    "rng": (_text, "text"),
    "source": (_text, "text"),
    "mask": (_text, "text"),
    "invert_mask": (_yes_no, "true or false"),
    "strength": (_number, "a number"),
    "feather": (_whole, "a whole number"),
    "left": (_whole, "a whole number"),
    "top": (_whole, "a whole number"),
    "right": (_whole, "a whole number"),
    "bottom": (_whole, "a whole number"),
    "instruction": (_text, "text"),
    "image_guidance": (_number, "a number"),
}
# Other names people write for the same settings (A1111's and the issue's words).
ALIASES = {"negative": "negative_prompt", "cfg": "guidance", "cfg_scale": "guidance",
           "sampler": "scheduler", "op": "operation"}


@dataclass(frozen=True)
class BatchLine:
    """One job as the file gives it: its line number (from 1, as an editor counts) and its
    settings, read and typed, unset ones left out."""

    number: int
    settings: Mapping[str, Any]


def read_batch_file(path: Path) -> list[BatchLine]:
    """Every job in a batch file, checked; a file that cannot be used is one sentence."""
    path = Path(path)
    if not path.is_file():
        raise BadRequest(f"'{path}' is not a file; give a .jsonl or .csv batch file.")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BadRequest(f"'{path.name}' is larger than {MAX_FILE_BYTES // 2**20} MB; split it "
                         "into smaller batch files.")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM from spreadsheet exports
    except UnicodeDecodeError:
        raise BadRequest(f"'{path.name}' is not UTF-8 text; save it as UTF-8.") from None
    lines = read_csv(text) if _is_csv(path, text) else read_json_lines(text)
    if not lines:
        raise BadRequest(f"'{path.name}' holds no jobs.")
    return lines


def _is_csv(path: Path, text: str) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return False
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return not first.startswith(("{", "#"))


def read_json_lines(text: str) -> list[BatchLine]:
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadRequest(f"Line {number}: not valid JSON ({error.msg} at column "
                             f"{error.colno}).") from None
        if not isinstance(data, dict):
            raise BadRequest(f"Line {number}: a job is a JSON object, like "
                             '{"prompt": "a red fox", "steps": 20}.')
        lines.append(BatchLine(number, checked_settings(data, number)))
    return lines


def read_csv(text: str) -> list[BatchLine]:
    rows = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    lines = []
    for row in rows:
        number = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            _check_header(header, number)
            continue
        if len(row) > len(header):
            raise BadRequest(f"Line {number}: {len(row)} cells for {len(header)} named "
                             "columns; put a prompt with commas in double quotes.")
        data = {name: cell for name, cell in zip(header, row, strict=False) if cell.strip()}
        lines.append(BatchLine(number, checked_settings(data, number)))
    return lines


def _check_header(header: list[str], number: int) -> None:
    for name in header:
        if not name:
            raise BadRequest(f"Line {number}: a column has no name; the first row names "
                             "each column's setting (prompt, steps, ...).")
        _setting_name(name, number)


def checked_settings(data: Mapping[str, Any], number: int) -> dict[str, Any]:
    """One line's settings by their own names, typed; an unknown setting or a value of the
    wrong kind is one sentence naming the line."""
    settings: dict[str, Any] = {}
    given: dict[str, str] = {}  # setting → the name the line used for it
    for key, value in data.items():
        name = _setting_name(key, number)
        if name in given:
            raise BadRequest(f"Line {number}: {given[name]} and {key} are the same setting; "
                             "give one.")
        given[name] = str(key)
        if value is None:
            continue
        read, kind = SETTINGS[name]
        try:
            settings[name] = read(value)
        except (ValueError, TypeError):
            raise BadRequest(f"Line {number}: {name} must be {kind}, not {value!r}.") from None
    operation = settings.setdefault("operation", "generate")
    if operation not in OPERATIONS:
        raise BadRequest(f"Line {number}: operation must be one of {', '.join(OPERATIONS)}, "
                         f"not {operation!r}.")
    if operation in FROM_PICTURE and not settings.get("source"):
        raise BadRequest(f"Line {number}: {operation} starts from a picture; add a source "
                         "(a picture file or a library picture's id).")
    if operation == "inpaint" and not settings.get("mask"):
        raise BadRequest(f"Line {number}: inpaint needs a mask (white = repaint).")
    if operation == "instruct" and not (settings.get("instruction") or settings.get("prompt")):
        raise BadRequest(f'Line {number}: instruct needs an instruction, e.g. "make it '
                         'winter".')
    if operation == "generate" and not settings.get("prompt", "").strip():
        raise BadRequest(f"Line {number}: a prompt is needed to make a picture.")
    return settings


def _setting_name(key: Any, number: int) -> str:
    name = str(key).strip().lower().replace("-", "_").replace(" ", "_")
    name = ALIASES.get(name, name)
    if name not in SETTINGS:
        known = ", ".join(SETTINGS)
        raise BadRequest(f"Line {number}: unknown setting {str(key)!r}; a line may set "
                         f"{known}.")
    return name
