"""The library's everyday behaviour: adding, searching, paging, favourites, tags, trash,
export, history, thumbnails, importing other tools' PNGs, and sharing between processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from desktop.library import BadImage, Library, LibraryError, LibraryInUse, UnknownImage
from desktop.library.instance import claim_window, window_owner
from desktop.library.thumbnails import ThumbnailCache
from engine.request import GenerationParameters

ROOT = Path(__file__).resolve().parent.parent
PARAMETERS = GenerationParameters(
    prompt="a red chair, studio light", negative_prompt="blurry", width=16, height=16,
    steps=4, guidance=7.5, scheduler="euler", seed=3, model_name="tiny",
    model_hash="0123", model_family="sd1")


def pixels(seed: int = 0, size: tuple[int, int] = (16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def add(library: Library, prompt: str = PARAMETERS.prompt, **changes) -> object:
    created_at = changes.pop("created_at", None)
    parameters = replace(PARAMETERS, prompt=prompt, **changes)
    return library.add_generated(pixels(parameters.seed), parameters, created_at=created_at)


@pytest.fixture
def library(tmp_path):
    with Library.open(tmp_path / "home") as opened:
        yield opened


def test_a_generated_image_is_a_png_carrying_its_id_and_parameters(library):
    entry = add(library, seed=42)
    with Image.open(entry.path) as image:
        assert np.array_equal(np.asarray(image), pixels(42))
        ours = json.loads(image.text["easel"])
        assert "Seed: 42" in image.text["parameters"]
        assert not image.getexif()
    assert ours["image_id"] == entry.id and ours["seed"] == 42
    assert ours["created_at"] == entry.created_at
    assert entry.path.parent.parent == library.images_dir  # images/YYYY-MM/
    assert (entry.prompt, entry.model, entry.seed, entry.width) == (
        PARAMETERS.prompt, "tiny", 42, 16)


def test_search_is_full_text_newest_first_with_filters(library):
    now = time.time()
    old = add(library, "a lighthouse in a storm", seed=1, created_at=now - 86400 * 10)
    red = add(library, "a red chair", seed=2, created_at=now - 60)
    blue = add(library, "a blue chair", seed=3, model_name="other", created_at=now)
    negative = add(library, "a cat", negative_prompt="lighthouse", created_at=now - 30)

    def ids(text="", **filters):
        return [entry.id for entry in library.search(text, **filters).entries]

    assert ids() == [blue.id, negative.id, red.id, old.id]
    assert ids("chair") == [blue.id, red.id]
    assert ids("CHAIR red") == [red.id]
    assert ids("chai") == [blue.id, red.id]  # the last word is a prefix: search as you type
    assert ids("lighthouse") == [negative.id, old.id]  # negative prompts are searched too
    assert ids('"unbalanced (quote: AND -') == []  # user text is never FTS syntax
    assert ids("...") == ids()  # no words: no text filter
    assert ids(model="other") == [blue.id]
    assert ids(seed=2) == [red.id]
    assert ids(since=now - 86400) == [blue.id, negative.id, red.id]
    assert ids(until=now - 86400) == [old.id]
    library.set_favourite([red.id, old.id])
    assert ids(favourites=True) == [red.id, old.id]
    assert library.count("chair") == 2


def test_counts_agree_with_searches_whatever_the_filters_and_trash(library):
    entries = [add(library, f"a {'red' if i % 2 else 'blue'} chair", seed=i,
                   model_name="tiny" if i % 3 else "other") for i in range(12)]
    library.trash([entries[1].id, entries[2].id, entries[3].id])
    library.set_favourite([entries[3].id, entries[4].id, entries[5].id])
    for text in ("", "red", "blue chair"):
        for filters in ({}, {"model": "other"}, {"favourites": True}, {"seed": 4}):
            for trash in ("exclude", "only", "include"):
                found = library.search(text, limit=100, trash=trash, **filters).entries
                assert library.count(text, trash=trash, **filters) == len(found), (
                    text, filters, trash)
    assert library.count() == 9 and library.count(trash="only") == 3


def test_paging_by_cursor_visits_every_image_once(library):
    for index in range(25):
        add(library, f"picture {index}", seed=index, created_at=1000.0 + index // 2)
    seen, cursor = [], None
    while True:
        page = library.search(limit=7, cursor=cursor)
        seen += [entry.seed for entry in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == list(range(25)) and len(seen) == 25
    assert seen[0] == 24  # newest first (equal times: the later addition first)
    assert [entry.seed for entry in library.search(limit=5, offset=5).entries] == seen[5:10]
    with pytest.raises(LibraryError, match="page marker"):
        library.search(cursor="nonsense")


def test_ids_by_prefix(library):
    entry = add(library)
    assert library.get(entry.id[:6]).id == entry.id
    assert library.get(entry.id.upper()).id == entry.id
    for bad in ("zz", "xyzw-not-hex", "0000000"):
        with pytest.raises(UnknownImage):
            library.get(bad)


def test_tags(library):
    first, second = add(library, seed=1), add(library, seed=2)
    library.add_tags([first.id, second.id], ["Portrait", "  warm   light "])
    library.add_tags([first.id], ["portrait"])  # tags ignore case: no duplicate
    assert library.tags_of(first.id) == ["Portrait", "warm light"]
    assert [e.id for e in library.search(tag="warm light").entries] == [second.id, first.id]
    library.remove_tags([second.id], ["warm light"])
    assert library.all_tags() == [("Portrait", 2), ("warm light", 1)]
    library.remove_tags([first.id], ["warm light"])
    assert library.all_tags() == [("Portrait", 2)]  # an unused tag disappears
    with pytest.raises(LibraryError, match="visible character"):
        library.add_tags([first.id], ["   "])


def test_trash_can_be_undone_and_emptying_deletes_files(library):
    keep, doomed = add(library, seed=1), add(library, seed=2)
    library.thumbnails.get(doomed.id, doomed.path)
    library.trash([doomed.id])
    assert [e.id for e in library.search().entries] == [keep.id]
    assert [e.id for e in library.search(trash="only").entries] == [doomed.id]
    assert doomed.path.exists()  # nothing is destroyed at once
    library.restore([doomed.id])
    assert len(library.search().entries) == 2
    library.trash([doomed.id])
    assert library.empty_trash() == 1
    assert not doomed.path.exists()
    assert not library.thumbnails.path_for(doomed.id).exists()
    assert library.search(trash="include").entries[0].id == keep.id
    assert library.connection.execute("SELECT count(*) FROM pending_deletions").fetchone() == (0,)


def test_a_crash_while_emptying_the_trash_is_finished_at_the_next_start(tmp_path):
    with Library.open(tmp_path) as library:
        doomed = add(library)
        library.trash([doomed.id])
        real_unlink = Path.unlink

        def crash(self, missing_ok=False):
            raise KeyboardInterrupt  # the process dies between the commit and the unlink

        Path.unlink = crash
        try:
            with pytest.raises(KeyboardInterrupt):
                library.empty_trash()
        finally:
            Path.unlink = real_unlink
        assert doomed.path.exists()
    with Library.open(tmp_path) as library:
        assert library.report.reconcile.deletions_finished == 1
        assert not doomed.path.exists()
        assert library.search(trash="include").entries == []  # the emptied image stays gone


def test_export_copies_with_or_without_metadata_and_never_overwrites(library, tmp_path):
    entry = add(library, seed=9)
    out = tmp_path / "out"
    [first] = library.export([entry.id], out)
    assert first.read_bytes() == entry.path.read_bytes()
    [second] = library.export([entry.id], out, strip_metadata=True)
    assert second != first and first.exists()
    with Image.open(second) as image:
        assert np.array_equal(np.asarray(image), pixels(9))
        assert not image.text and "exif" not in image.info
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(LibraryError, match="is a file"):
        library.export([entry.id], tmp_path / "a-file")


def test_export_is_all_or_nothing(library, tmp_path):
    good, gone = add(library, seed=1), add(library, seed=2)
    gone.path.unlink()
    with pytest.raises(LibraryError, match="missing"):
        library.export([good.id, gone.id], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything was written


def test_prompt_history_counts_without_duplicates_and_pins(library):
    add(library, "a red chair", created_at=100.0)
    add(library, "a  red   chair ", created_at=200.0)  # the same prompt, spaced differently
    add(library, "a lighthouse", created_at=300.0)
    entries = library.history()
    # One entry, counted twice, showing the text as last typed.
    assert [(e.text, e.uses) for e in entries] == [("a lighthouse", 1), ("a  red   chair", 2)]
    assert entries[1].last_used == 200.0
    library.pin_prompt("a red chair")
    assert [e.text for e in library.history()] == ["a  red   chair", "a lighthouse"]
    assert [e.text for e in library.history("LIGHT")] == ["a lighthouse"]
    assert [e.text for e in library.history("100%_")] == []  # LIKE wildcards are literal
    assert [e.text for e in library.history(kind="negative")] == ["blurry"]
    with pytest.raises(LibraryError, match="not in the history"):
        library.pin_prompt("never used")


def test_lineage_follows_source_ids(library):
    parent = add(library, seed=1)
    child = library.add_generated(pixels(2), PARAMETERS, operation="image_to_image",
                                  source_id=parent.id)
    with Image.open(child.path) as image:
        assert json.loads(image.text["easel"])["source_image_id"] == parent.id
    assert [entry.id for entry in library.lineage(child.id)] == [child.id, parent.id]


def test_thumbnails_are_lazy_cached_and_bounded(tmp_path):
    with Library.open(tmp_path) as library:
        entries = [library.add_generated(pixels(seed, (64, 96)), PARAMETERS)
                   for seed in range(6)]
    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=10_000)
    first = cache.get(entries[0].id, entries[0].path, size=32)
    with Image.open(first) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (32, 21)
    made = first.stat().st_mtime_ns
    assert cache.get(entries[0].id, entries[0].path, size=32) == first  # a hit
    assert first.stat().st_mtime_ns >= made
    for entry in entries:
        cache.get(entry.id, entry.path, size=64)
    assert cache.total_bytes() <= 10_000
    assert cache.path_for(entries[-1].id, 64).exists()  # the newest survive the trim


def test_other_tools_pngs_are_imported_and_searchable(library, tmp_path):
    a1111 = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle on a hill\nNegative prompt: fog\n"
                                "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 77, "
                                "Size: 16x16, Model: dreamy")
    exif = Image.Exif()
    exif[0x8825] = {1: "N"}  # GPS info, which must not survive the import
    Image.fromarray(pixels(5)).save(a1111, pnginfo=info, exif=exif)
    entry = library.import_file(a1111)
    assert (entry.origin, entry.prompt, entry.negative_prompt, entry.seed, entry.model) == (
        "a1111", "a castle on a hill", "fog", 77, "dreamy")
    assert [e.id for e in library.search("castle").entries] == [entry.id]
    with Image.open(entry.path) as image:
        assert np.array_equal(np.asarray(image), pixels(5))
        assert "exif" not in image.info and not image.getexif()
        assert image.text["parameters"].startswith("a castle")  # A1111 can still read it
        assert json.loads(image.text["easel"])["image_id"] == entry.id
    # A rebuild from the files alone gives the same row back.
    library.rebuild()
    assert library.get(entry.id).prompt == "a castle on a hill"


def test_importing_an_easel_image_keeps_its_id_once(library, tmp_path):
    entry = add(library, "a fox")
    copy = tmp_path / "fox.png"
    copy.write_bytes(entry.path.read_bytes())
    with pytest.raises(LibraryError, match="already in the library"):
        library.import_file(copy)
    with Library.open(tmp_path / "other") as other:
        imported = other.import_file(copy)
        assert (imported.id, imported.prompt, imported.origin) == (entry.id, "a fox", "easel")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
        ("jpeg", "is a JPEG file; Easel takes PNG"),
        ("truncated", "damaged or incomplete"),
    ],
)
def test_bad_imports_are_one_sentence_and_add_nothing(library, tmp_path, content, message):
    path = tmp_path / "input.png"
    if content == "jpeg":
        Image.fromarray(pixels(1)).save(path, format="JPEG")
    elif content == "truncated":
        Image.fromarray(pixels(1, (64, 64))).save(path)
        path.write_bytes(path.read_bytes()[:-300])
    else:
        path.write_bytes(content)
    with pytest.raises(BadImage, match=message) as caught:
        library.import_file(path)
    assert "\n" not in str(caught.value)
    assert library.count(trash="include") == 0
    assert not list(library.images_dir.rglob("*.png"))
    assert not [p for p in library.images_dir.rglob("*") if p.is_file()]


def test_a_decompression_bomb_is_refused(library, tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(pixels(1, (64, 64))).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels is over the limit
    with pytest.raises(BadImage, match="too large"):
        library.import_file(path)


def test_another_process_sees_commits_through_data_version(tmp_path):
    with Library.open(tmp_path) as app, Library.open(tmp_path) as command:
        assert not app.changed_elsewhere()
        entry = add(command)
        assert app.changed_elsewhere()
        assert not app.changed_elsewhere()  # once per change
        assert app.get(entry.id).prompt == PARAMETERS.prompt
        add(app)
        assert not app.changed_elsewhere()  # its own commits are not news


def test_a_second_window_on_the_same_library_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from desktop.library.instance import "
         "claim_window; lock = claim_window(Path(sys.argv[1])); print('held', flush=True); "
         "sys.stdin.read()", str(tmp_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LibraryInUse, match="already open"):
            claim_window(tmp_path)
        assert window_owner(tmp_path) == holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    claim_window(tmp_path).close()  # the lock died with its holder
