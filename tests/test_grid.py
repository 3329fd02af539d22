"""Comparison grids (``easel grid``, ``desktop.batch.grid``): axes, cells, seeds, the sheet,
the resume; on the built-in starter model at 128 pixels and two steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop import paths
from desktop.batch.grid import AXIS_SETTINGS, Axis, Grid, parse_axis, run_grid
from desktop.batch.jobs import JobMaker
from desktop.batch.local import LocalExecutor
from desktop.batch.sheet import FAILED, SheetCell, draw_sheet
from desktop.batch.work import Done
from desktop.cli import main
from desktop.cli.common import model_store
from desktop.image_files import read_parameters
from desktop.library import Library
from desktop.library.pngs import read_png
from desktop.provenance.reading import VALID, read_credentials
from engine.errors import BadRequest
from engine.runtime import CancelToken, RuntimeOptions

SMALL = ["--width", "128", "--height", "128", "--steps", "2"]
BASE = {"prompt": "a red house in the centre", "width": 128, "height": 128, "steps": 2}
CPU = RuntimeOptions(providers=("cpu",))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def library(home):
    opened = Library.open(paths.data_dir())
    yield opened
    opened.close()


def pixels_of(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def easel_chunk(path: Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["easel"])


def region(sheet: np.ndarray, box) -> np.ndarray:
    left, top, width, height = box
    return sheet[top:top + height, left:left + width]


# --- the sheet, end to end ----------------------------------------------------------------

def test_grid_command_lays_cells_out_by_axes_with_labels_and_seeds(home, capsys):
    code = main(["grid", "a red house in the centre", "--x", "steps=2,3,4",
                 "--y", "guidance=1,3", *SMALL[:4]])
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 7  # six cells, then the sheet
    cells, sheet_path = [Path(text) for text in printed[:6]], Path(printed[6])
    metadata = easel_chunk(sheet_path)
    assert metadata["operation"] == "grid"
    layout = metadata["grid"]
    assert layout["x"] == {"setting": "steps", "values": [2, 3, 4]}
    assert layout["y"] == {"setting": "guidance", "values": [1.0, 3.0]}
    sheet = pixels_of(sheet_path)
    by_id = {easel_chunk(path)["image_id"]: path for path in cells}
    boxes = {}
    for record in layout["cells"]:
        cell_path = by_id[record["image_id"]]
        made_with = easel_chunk(cell_path)
        # The cell at column c, row r was made with the c-th x value and the r-th y value.
        assert made_with["steps"] == record["values"]["steps"]
        assert made_with["guidance"] == record["values"]["guidance"]
        assert made_with["seed"] == record["seed"] == layout["cells"][0]["seed"]
        picture = pixels_of(cell_path)
        left, top, width, height = record["box"]
        factor = width // picture.shape[1]
        assert factor >= 1 and (width, height) == (128 * factor, 128 * factor)
        shown = np.asarray(Image.fromarray(picture).resize((width, height),
                                                           Image.Resampling.NEAREST))
        np.testing.assert_array_equal(region(sheet, record["box"]), shown)
        boxes[(layout["x"]["values"].index(made_with["steps"]),
               layout["y"]["values"].index(made_with["guidance"]))] = record["box"]
    # Columns left to right, rows top to bottom, none overlapping.
    for row in range(2):
        lefts = [boxes[(column, row)][0] for column in range(3)]
        assert lefts == sorted(lefts) and len({boxes[(c, row)][1] for c in range(3)}) == 1
        assert all(b - a >= boxes[(0, 0)][2] for a, b in zip(lefts, lefts[1:], strict=False))
    assert boxes[(0, 1)][1] >= boxes[(0, 0)][1] + boxes[(0, 0)][3]
    # Labels: the strip above the first row (column labels), the one left of the first
    # column (row labels), the title and the line under each cell all hold dark text.
    first = boxes[(0, 0)]
    above = sheet[first[1] - 20:first[1] - 2, first[0]:boxes[(2, 0)][0] + first[2]]
    left_of = sheet[first[1]:first[1] + first[3], :first[0] - 2]
    below = sheet[first[1] + first[3] + 2:first[1] + first[3] + 18, first[0]:first[0] + first[2]]
    title = sheet[:first[1] - 30]
    for strip in (above, left_of, below, title):
        assert (strip.min(axis=2) < 100).sum() > 20
    assert sheet.shape[1] > boxes[(2, 0)][0] + first[2] and sheet.shape[0] > boxes[(0, 1)][1]


def test_the_sheet_is_a_library_picture_with_readable_metadata(home, library):
    outcome = run_grid(Grid(BASE, parse_axis("steps=2,3"), parse_axis("cfg=1,2")),
                       JobMaker(model_store(), library, CPU, home), library,
                       LocalExecutor(CPU), CancelToken())
    sheet = outcome.sheet
    assert sheet is not None and sheet.operation == "grid"
    assert library.get(sheet.id).path == sheet.path
    info = read_png(sheet.path)
    with Image.open(sheet.path) as image:
        size, a1111 = image.size, image.text["parameters"]
    assert (info.width, info.height) == size == (sheet.width, sheet.height)
    assert info.operation == "grid" and info.prompt == BASE["prompt"]
    assert f"Size: {size[0]}x{size[1]}" in a1111 and "Steps: 2" in a1111
    parameters = read_parameters(sheet.path)
    assert parameters is not None and (parameters.width, parameters.height) == size
    cells = {record["cell"]: record["image_id"] for record in sheet.parameters["grid"]["cells"]}
    assert sorted(cells) == [1, 2, 3, 4]
    assert {entry.id for entry in outcome.summary.made} == set(cells.values())
    assert sheet.parameters["batch"]["picture"] == "sheet"
    # Content Credentials: signed, valid, naming the operation; a composite of made pictures.
    credentials = read_credentials(sheet.path)
    assert credentials.state == VALID and credentials.operation == "grid"
    assert credentials.digital_source_type.endswith("compositeWithTrainedAlgorithmicMedia")


# --- seeds and prompt search/replace ---------------------------------------------------------

def test_every_cell_has_one_seed_unless_an_axis_varies_it():
    grid = Grid(BASE, parse_axis("steps=2,3"), parse_axis("guidance=1,2"))
    seeds = {line.settings["seed"] for line in grid.lines()}
    assert len(seeds) == 1
    assert seeds == {line.settings["seed"] for line in Grid(BASE, parse_axis("steps=2,3"),
                                                            parse_axis("guidance=1,2")).lines()}
    other = Grid(BASE, parse_axis("steps=2,4"), parse_axis("guidance=1,2"))
    assert {line.settings["seed"] for line in other.lines()} != seeds
    given = Grid({**BASE, "seed": 77}, parse_axis("steps=2,3"))
    assert [line.settings["seed"] for line in given.lines()] == [77, 77]
    varied = Grid({**BASE, "seed": 77}, parse_axis("steps=2,3"), parse_axis("seed=5,9"))
    assert [line.settings["seed"] for line in varied.lines()] == [5, 5, 9, 9]
    assert [line.number for line in varied.lines()] == [1, 2, 3, 4]


def test_prompt_search_and_replace():
    grid = Grid({"prompt": "a cat on a mat", "negative_prompt": "a blurry cat"},
                parse_axis("prompt_sr=cat,dog,red fox"))
    assert [line.settings["prompt"] for line in grid.lines()] == [
        "a cat on a mat", "a dog on a mat", "a red fox on a mat"]
    assert grid.lines()[1].settings["negative_prompt"] == "a blurry dog"
    with pytest.raises(BadRequest, match="looks for 'horse'.*does not hold it"):
        Grid({"prompt": "a cat on a mat"}, parse_axis("prompt_sr=horse,dog"))


def test_axis_values_are_typed_and_parsed_as_csv():
    assert parse_axis("guidance=3, 5,7.5") == Axis("guidance", (3.0, 5.0, 7.5))
    assert parse_axis("CFG=3").setting == "guidance"
    assert parse_axis('prompt="a cat, sitting",a dog').values == ("a cat, sitting", "a dog")
    assert Axis("steps", ("10", 20)).values == (10, 20)
    assert "prompt_sr" in AXIS_SETTINGS and "count" not in AXIS_SETTINGS


# --- bad axes: one sentence, before any work --------------------------------------------------

@pytest.mark.parametrize("axes, sentence", [
    (["--x", "colour=1,2"], "An axis cannot vary 'colour'; it may vary steps"),
    (["--x", "steps"], "An axis is a setting and its values, like steps=10,20,30"),
    (["--x", "steps="], "The steps axis has no values"),
    (["--x", "steps=2,,3"], "The steps axis has an empty value"),
    (["--x", "steps=2,many"], "The steps axis takes a whole number, not 'many'."),
    (["--x", "guidance=high"], "The guidance axis takes a number, not 'high'."),
    (["--x", "scheduler=euler,fastest"], "The scheduler axis takes euler"),
    (["--x", "steps=2,3,2"], "The steps axis gives 2 twice"),
    (["--x", "steps=2,3", "--y", "steps=4"], "Two axes vary steps"),
    (["--x", "seed=" + ",".join(map(str, range(17)))], "The seed axis has 17 values; a grid "
                                                       "takes at most 16"),
    (["--x", "seed=" + ",".join(map(str, range(11))), "--y", "steps=" + ",".join(
        map(str, range(2, 12)))], "This grid has 110 cells; a grid takes at most 100"),
    (["--x", "prompt_sr=dog,cat"], "The prompt_sr axis looks for 'dog'"),
    (["--x", "model=starter,nowhere"], "Cell 2 (model: nowhere): No model named 'nowhere'"),
    (["--x", "width=128,100"], "Cell 2 (width: 100): "),
])
def test_a_bad_axis_is_one_sentence_before_any_work(home, capsys, axes, sentence):
    assert main(["grid", "a red house", *axes, *SMALL]) == 1
    said = capsys.readouterr()
    assert said.out == ""
    lines = said.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"easel: error: {sentence}")
    assert not list(home.glob("images/**/*.png"))


# --- resuming, failures --------------------------------------------------------------------

class StopAfter:
    """A local executor that presses Ctrl+C after ``pictures`` pictures."""

    name = "test"

    def __init__(self, pictures: int) -> None:
        self.inner = LocalExecutor(CPU)
        self.pictures = pictures

    def run(self, works, cancel, on_progress=None):
        for done in self.inner.run(works, cancel, on_progress):
            self.pictures -= 1
            if self.pictures == 0:
                cancel.cancel()
            yield done

    def close(self) -> None:
        self.inner.close()


def test_a_stopped_grid_run_again_makes_only_its_missing_cells_and_one_sheet(home, library):
    grid = Grid(BASE, parse_axis("steps=2,3,4"), parse_axis("guidance=1,2"))
    maker = JobMaker(model_store(), library, CPU, home)
    stopped = run_grid(grid, maker, library, StopAfter(2), CancelToken())
    assert stopped.summary.cancelled and len(stopped.summary.made) == 2
    assert stopped.sheet is None
    finished = run_grid(grid, maker, library, LocalExecutor(CPU), CancelToken())
    assert len(finished.summary.made) == 4 and finished.sheet is not None
    made = {entry.id for entry in stopped.summary.made + finished.summary.made}
    recorded = {record["image_id"] for record in finished.sheet.parameters["grid"]["cells"]}
    assert made == recorded  # the first run's cells are on the sheet, none made twice
    pictures = len(list(home.glob("images/**/*.png")))
    again = run_grid(grid, maker, library, LocalExecutor(CPU), CancelToken())
    assert again.summary.pictures == 0 and again.summary.made == []
    assert again.sheet is not None and again.sheet.id == finished.sheet.id
    assert len(list(home.glob("images/**/*.png"))) == pictures == 7


def test_the_command_says_when_the_grid_is_all_there(home, capsys):
    arguments = ["grid", "a red house", "--x", "steps=2,3", *SMALL[:4]]
    assert main(arguments) == 0
    sheet = capsys.readouterr().out.split()[-1]
    assert main(arguments) == 0
    said = capsys.readouterr()
    assert said.out.split() == [sheet]
    assert "already in the library" in said.err


class FailingCell(LocalExecutor):
    """Cell ``line`` fails for its own reasons (as a black picture would)."""

    def __init__(self, line: int) -> None:
        super().__init__(CPU)
        self.line = line

    def run(self, works, cancel, on_progress=None):
        for work in works:
            if work.line == self.line:
                yield Done(work, error="The picture came out black.")
            else:
                yield from super().run([work], cancel, on_progress)


def test_a_failed_cell_is_a_grey_box_and_the_sheet_still_comes_out(home, library):
    grid = Grid(BASE, parse_axis("steps=2,3"), parse_axis("guidance=1,2"))
    outcome = run_grid(grid, JobMaker(model_store(), library, CPU, home), library,
                       FailingCell(3), CancelToken())
    assert [failure.line for failure in outcome.summary.failures] == [3]
    assert outcome.sheet is not None
    records = outcome.sheet.parameters["grid"]["cells"]
    assert records[2]["image_id"] is None and all(r["image_id"] for r in records[:2])
    grey = region(pixels_of(outcome.sheet.path), records[2]["box"])
    assert (grey == FAILED).all(axis=2).mean() > 0.9 and (grey.min(axis=2) < 100).any()


# --- the drawing alone ------------------------------------------------------------------------

def picture(seed: int, size=(40, 60)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_z_blocks_stack_with_their_titles_and_small_pictures_are_enlarged():
    cells = [SheetCell(picture(index), 7, index % 2, 0, index // 2) for index in range(4)]
    sheet = draw_sheet("a title", [["a: 1", "a: 2"], None, ["model: one", "model: two"]],
                       cells)
    layout = sheet.layout
    assert len(layout.block_titles) == 2 and len(layout.column_labels) == 4
    assert layout.row_labels == ()
    assert layout.block_titles[1][1] > layout.cells[1][1] + layout.cells[1][3]
    assert layout.cells[2][1] > layout.block_titles[1][1]  # block two's cells under its title
    factor = layout.cells[0][3] // 40
    assert factor > 1 and layout.scale == factor
    for cell, box in zip(cells, layout.cells, strict=True):
        expected = np.repeat(np.repeat(cell.picture, factor, axis=0), factor, axis=1)
        np.testing.assert_array_equal(region(sheet.pixels, box), expected)
    for box in layout.block_titles:
        assert (region(sheet.pixels, box).min(axis=2) < 100).sum() > 20


def test_a_sheet_too_large_is_shrunk_to_fit(monkeypatch):
    monkeypatch.setattr("desktop.batch.sheet.MAX_PICTURES_SIDE", 100)
    cells = [SheetCell(picture(index, (80, 80)), 1, index, 0, 0) for index in range(2)]
    sheet = draw_sheet("t", [["x: 1", "x: 2"], None, None], cells)
    assert sheet.layout.scale == pytest.approx(100 / 160)
    assert sheet.layout.cells[0][2:] == (50, 50)
    expected = Image.fromarray(cells[0].picture).resize((50, 50), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(region(sheet.pixels, sheet.layout.cells[0]),
                                  np.asarray(expected))

