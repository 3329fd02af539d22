"""``easel batch``: batch files read and checked before any work, jobs with stable ids and
seeds, pictures saved with their job, resumed after a stop (Ctrl+C or kill -9) with no picture
made twice, failures listed by line. The built-in starter model makes each picture in well
under a second, in a throwaway data folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.batch import local
from desktop.batch.jobs import job_id, seed_of
from desktop.batch.lines import BatchLine, read_batch_file
from desktop.batch.progress import BatchProgress, duration
from desktop.batch.work import Done
from desktop.cli import main
from desktop.library import Library
from engine.errors import BadRequest
from tests.batch_files import batch_pictures, write_jsonl

PROMPTS = ["a red fox in the centre", "a dog on the left, on a green background",
           "a big cat in the centre"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"



def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# --- reading batch files ---------------------------------------------------------------------


def test_json_lines_and_csv_give_the_same_jobs(tmp_path):
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text('# my project\n{"prompt": "a fox, at dusk", "steps": 4, "cfg": 5.5}\n\n'
                     '{"prompt": "a dog", "count": 2, "negative": "blur"}\n', encoding="utf-8")
    csv = tmp_path / "jobs.csv"
    csv.write_text('prompt,steps,guidance,count,negative_prompt\n'
                   '"a fox, at dusk",4,5.5,,\n'
                   'a dog,,,2,blur\n', encoding="utf-8")
    from_json = read_batch_file(jsonl)
    from_csv = read_batch_file(csv)
    settings = [dict(line.settings) for line in from_json]
    assert settings == [dict(line.settings) for line in from_csv]
    assert settings[0] == {"operation": "generate", "prompt": "a fox, at dusk", "steps": 4,
                           "guidance": 5.5}
    assert settings[1]["negative_prompt"] == "blur" and settings[1]["count"] == 2
    # Line numbers are the file's own, as an editor counts them (comments and blanks too).
    assert [line.number for line in from_json] == [2, 4]
    assert [line.number for line in from_csv] == [2, 3]


@pytest.mark.parametrize(("name", "text", "sentence"), [
    ("a.jsonl", '{"prompt": "x"}\n{"prompt": "y",}\n', "Line 2: not valid JSON"),
    ("a.jsonl", '["a fox"]\n', "Line 1: a job is a JSON object"),
    ("a.jsonl", '{"prompt": "x", "stpes": 4}\n', "Line 1: unknown setting 'stpes'"),
    ("a.jsonl", '{"prompt": "x", "steps": "many"}\n', "Line 1: steps must be a whole number"),
    ("a.jsonl", '{"prompt": "x", "steps": true}\n', "Line 1: steps must be a whole number"),
    ("a.jsonl", '{"steps": 4}\n', "Line 1: a prompt is needed"),
    ("a.jsonl", '{"prompt": "x", "negative": "a", "negative_prompt": "b"}\n',
     "Line 1: negative and negative_prompt are the same setting"),
    ("a.jsonl", '{"operation": "inpaint", "source": "a.png"}\n', "Line 1: inpaint needs a mask"),
    ("a.jsonl", '{"operation": "edit"}\n', "Line 1: edit starts from a picture"),
    ("a.jsonl", '{"operation": "paint", "prompt": "x"}\n', "Line 1: operation must be one of"),
    ("a.csv", 'prompt,steps\n"a fox",4\n"a, dog",4,9\n', "Line 3: 3 cells for 2 named columns"),
    ("a.csv", 'prompt,,steps\nx,,4\n', "Line 1: a column has no name"),
    ("a.jsonl", "\n# nothing but a comment\n", "holds no jobs"),
])
def test_a_bad_line_is_one_sentence_naming_it(tmp_path, name, text, sentence):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadRequest) as raised:
        read_batch_file(path)
    assert sentence in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_file_that_is_not_text_or_not_there_is_refused(tmp_path):
    binary = tmp_path / "jobs.csv"
    binary.write_bytes(b"prompt\n\xff\xfe\x00")
    with pytest.raises(BadRequest, match="not UTF-8"):
        read_batch_file(binary)
    with pytest.raises(BadRequest, match="is not a file"):
        read_batch_file(tmp_path / "missing.jsonl")


def test_job_ids_follow_the_settings_and_the_line():
    line = BatchLine(3, {"operation": "generate", "prompt": "a fox"})
    assert job_id(line) == job_id(BatchLine(3, {"prompt": "a fox", "operation": "generate"}))
    assert job_id(line) != job_id(BatchLine(4, {"operation": "generate", "prompt": "a fox"}))
    assert job_id(line) != job_id(BatchLine(3, {"operation": "generate", "prompt": "a dog"}))
    assert 0 <= seed_of(job_id(line)) < 2**32


# --- running ---------------------------------------------------------------------------------


def test_a_batch_saves_each_picture_with_its_job_and_a_second_run_makes_nothing(
        home, tmp_path, capsys):
    file = write_jsonl(tmp_path / "jobs.jsonl", [
        {"prompt": PROMPTS[0], "steps": 3, "count": 2, "seed": 7},
        {"prompt": PROMPTS[1], "steps": 3}])
    assert main(["batch", str(file)]) == 0
    captured = capsys.readouterr()
    printed = captured.out.split()
    assert len(printed) == 3
    assert "line 1 (generate 'a red fox in the centre'): 2 made · 1/2 jobs" in captured.err
    assert "Batch done: 3 pictures made" in captured.err
    made = batch_pictures(home)
    assert sorted(index for _, index in made) == [0, 0, 1]
    assert all(len(paths) == 1 for paths in made.values())
    seeds = sorted(json.loads(Image.open(path).text["easel"])["seed"] for path in printed)
    lines = read_batch_file(file)
    assert seeds == sorted([7, 8, seed_of(job_id(lines[1]))])  # a seedless line's own seed
    metadata = json.loads(Image.open(printed[0]).text["easel"])
    assert metadata["batch"] == {"job": job_id(lines[0]), "line": 1, "picture": 0,
                                 "file": "jobs.jsonl"}

    assert main(["batch", str(file)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Nothing to make: the 2 jobs of this batch already have their pictures" in (
        captured.err)
    assert batch_pictures(home) == made


def test_nothing_runs_when_any_line_is_bad(home, tmp_path, capsys):
    file = write_jsonl(tmp_path / "jobs.jsonl", [
        {"prompt": PROMPTS[0], "steps": 3},
        {"prompt": PROMPTS[1], "model": "no-such-model"}])
    assert main(["batch", str(file)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("easel: error: Line 2: ") and "no-such-model" in error
    assert error.count("\n") == 1
    assert batch_pictures(home) == {}


@pytest.mark.parametrize(("job", "sentence"), [
    ({"operation": "edit", "source": "nowhere.png"}, "Line 1: 'nowhere.png' is neither"),
    ({"prompt": "x", "strength": 0.5}, "Line 1: strength does not apply to generate"),
    ({"prompt": PROMPTS[0], "width": 100}, "Line 1: "),
    ({"prompt": PROMPTS[0], "scheduler": "fastest"}, "Line 1: "),
])
def test_late_checks_name_the_line_too(home, tmp_path, capsys, job, sentence):
    file = write_jsonl(tmp_path / "jobs.jsonl", [job])
    assert main(["batch", str(file)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"easel: error: {sentence}")
    assert batch_pictures(home) == {}


def test_edits_read_sources_beside_the_batch_file_and_keep_lineage(home, tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    assert main(["generate", PROMPTS[1], "--seed", "3", "--steps", "3",
                 "-o", str(folder / "start.png")]) == 0
    source_id = json.loads(Image.open(folder / "start.png").text["easel"])["image_id"]
    capsys.readouterr()
    write_jsonl(folder / "edits.jsonl", [
        {"operation": "variations", "source": "start.png", "steps": 4, "count": 2},
        {"operation": "edit", "source": source_id[:10], "prompt": PROMPTS[2], "steps": 4,
         "strength": 0.5}])
    os.chdir(tmp_path)  # relative to the batch file, not to where the command runs
    assert main(["batch", str(folder / "edits.jsonl")]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3
    for path in printed:
        metadata = json.loads(Image.open(path).text["easel"])
        assert metadata["operation"] == "image_to_image"
        assert metadata["source_image_id"] == source_id


def test_a_job_that_fails_is_listed_by_line_and_the_rest_are_made(
        home, tmp_path, capsys, monkeypatch):
    real = local.make_pictures

    def fails_on_line_2(work, *arguments):
        if work.line == 2:
            return Done(work, error="The picture came out black (all NaN); nothing saved.")
        return real(work, *arguments)

    monkeypatch.setattr(local, "make_pictures", fails_on_line_2)
    file = write_jsonl(tmp_path / "jobs.jsonl", [
        {"prompt": PROMPTS[0], "steps": 3}, {"prompt": PROMPTS[1], "steps": 3},
        {"prompt": PROMPTS[2], "steps": 3}])
    assert main(["batch", str(file)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.split()) == 2
    assert "Batch done with failures: 2 pictures made" in captured.err
    assert "1 line failed:" in captured.err
    assert "  line 2: The picture came out black" in captured.err
    assert "line 2 (generate 'a dog on the left, on a green background'): failed" in (
        captured.err)

    monkeypatch.setattr(local, "make_pictures", real)  # run again: only line 2 is made
    assert main(["batch", str(file)]) == 0
    assert len(capsys.readouterr().out.split()) == 1
    assert len(batch_pictures(home)) == 3


def test_a_stopped_batch_goes_on_where_it_stopped_with_the_same_pictures(
        home, tmp_path, capsys, monkeypatch):
    jobs = [{"prompt": PROMPTS[0], "steps": 3, "count": 3},
            {"prompt": PROMPTS[1], "steps": 3, "count": 2}]
    file = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    # The reference: the same batch, uninterrupted, in another data folder.
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "reference"))
    assert main(["batch", str(file)]) == 0
    capsys.readouterr()
    reference = {key: pixels(paths[0])
                 for key, paths in batch_pictures(tmp_path / "reference").items()}
    monkeypatch.setenv("EASEL_HOME", str(home))

    # Stop after the first job: Ctrl+C as the batch's cancel token sees it.
    real = local.make_pictures

    def stop_after_line_1(work, models, on_progress, cancel, clock):
        if work.line == 2:
            cancel.cancel()
            cancel.raise_if_cancelled()
        return real(work, models, on_progress, cancel, clock)

    monkeypatch.setattr(local, "make_pictures", stop_after_line_1)
    assert main(["batch", str(file)]) == 130
    error = capsys.readouterr().err
    assert "Stopped: 3 pictures made" in error and "run the same batch again" in error
    assert len(batch_pictures(home)) == 3

    # Lose one picture of the first job as a crash between two saves would (its file never
    # written): the next run makes exactly that one and the second job.
    with Library.open(home) as library:
        missing = library.search(limit=10).entries[0]  # the newest: line 1's picture 2
        library.trash([missing.id])
        library.empty_trash()
    monkeypatch.setattr(local, "make_pictures", real)
    assert main(["batch", str(file)]) == 0
    assert len(capsys.readouterr().out.split()) == 3
    made = batch_pictures(home)
    assert sorted(made) == sorted(reference)
    for key, paths in made.items():
        assert len(paths) == 1
        assert np.array_equal(pixels(paths[0]), reference[key]), key


def test_kill_9_in_the_middle_loses_nothing_and_makes_nothing_twice(home, tmp_path):
    jobs = [{"prompt": PROMPTS[index % 3], "steps": 6, "seed": index} for index in range(8)]
    file = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    environment = {**os.environ, "EASEL_HOME": str(home)}
    command = [sys.executable, "-m", "desktop.cli", "batch", str(file), "--threads", "1"]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    saved = [process.stdout.readline() for _ in range(2)]  # two pictures are in
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert all(line.strip() for line in saved)
    before = batch_pictures(home)
    assert 2 <= len(before) < 8
    finished = subprocess.run(command, env=environment, capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr
    after = batch_pictures(home)
    assert len(after) == 8 and all(len(paths) == 1 for paths in after.values())
    assert len(finished.stdout.split()) == 8 - len(before)
    for paths in after.values():
        with Image.open(paths[0]) as image:
            image.load()  # whole, not cut short
            metadata = json.loads(image.text["easel"])
            assert image.size == (metadata["width"], metadata["height"])


# --- progress ----------------------------------------------------------------------------------


def test_progress_says_jobs_pictures_rate_and_time_left():
    progress = BatchProgress(jobs_done=3, jobs=12, pictures_done=6, pictures=24, failed=1,
                             seconds=90.0)
    assert progress.per_minute == pytest.approx(4.0)
    assert progress.seconds_left == pytest.approx(270.0)
    assert progress.line() == ("3/12 jobs · 6/24 pictures · 1 failed · 4.0 pictures/min · "
                               "about 4 min left")
    assert BatchProgress(0, 2, 0, 4, 0, 5.0).line() == "0/2 jobs · 0/4 pictures"
    assert [duration(s) for s in (12, 150, 4900)] == ["12 s", "2 min", "1 h 22 min"]


def test_the_command_is_listed_with_what_a_line_may_set():
    result = subprocess.run([sys.executable, "-m", "desktop.cli", "batch", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "negative_prompt" in result.stdout and "--ray" in result.stdout
