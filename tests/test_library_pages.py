"""Reading a search page by page from each page's first key (``PageTable``) gives exactly the
pages that OFFSET gives, for every filter, in any order of reading, and after changes."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from desktop.library import Library, PageTable
from engine.request import GenerationParameters

PARAMETERS = GenerationParameters(
    prompt="a chair", negative_prompt="", width=8, height=8, steps=1, guidance=1.0,
    scheduler="euler", seed=0, model_name="tiny", model_hash="0123", model_family="sd1")
WORDS = ("red chair", "blue chair", "red lamp", "green lamp in a storm")
SIZE = 6  # small pages, so a few dozen pictures make many of them


def add(library: Library, number: int, created_at: float, **changes: object) -> str:
    prompt = changes.pop("prompt", WORDS[number % len(WORDS)])
    parameters = replace(PARAMETERS, prompt=prompt, seed=number,
                         model_name="other" if number % 5 == 0 else "tiny", **changes)
    pixels = np.full((8, 8, 3), number % 256, dtype=np.uint8)
    return library.add_generated(pixels, parameters, created_at=created_at).id


@pytest.fixture
def library(tmp_path):
    with Library.open(tmp_path / "home", backup_interval_s=10**9) as opened:
        now = time.time()
        ids = [add(opened, number, now - 1000 + number) for number in range(45)]
        opened.set_favourite(ids[::3])
        opened.add_tags(ids[::4], ["kept"])
        opened.trash(ids[1::7])
        yield opened


FILTERS = [
    {},
    {"text": "chair"},
    {"text": "red"},
    {"text": "lamp storm"},
    {"text": "nothing matches this"},
    {"favourites": True},
    {"text": "red", "favourites": True},
    {"tag": "kept"},
    {"model": "other"},
    {"trash": "only"},
    {"trash": "include"},
]


def offset_pages(library: Library, text: str = "", **filters: object) -> list[list[str]]:
    """Every page as OFFSET reads it, and one empty page past the end."""
    pages: list[list[str]] = []
    while True:
        page = library.search(text, limit=SIZE, offset=len(pages) * SIZE, **filters)
        pages.append([entry.id for entry in page.entries])
        if not page.entries:
            return pages


def table_pages(table: PageTable, order: list[int]) -> list[list[str]]:
    found = {number: [entry.id for entry in table.page(number)] for number in order}
    return [found[number] for number in sorted(found)]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(map(str, f.values())) or "all")
def test_pages_by_key_are_the_pages_offset_reads(library, filters):
    expected = offset_pages(library, **filters)
    numbers = list(range(len(expected) + 2))  # two past the end: empty, never an error
    expected += [[], []]
    in_order = PageTable(library, page_size=SIZE, **filters)
    assert table_pages(in_order, numbers) == expected
    # A jump straight to the deepest page first, then back and forth, as a dragged bar does.
    deepest_first = PageTable(library, page_size=SIZE, **filters)
    assert table_pages(deepest_first, numbers[::-1]) == expected
    random.Random(3).shuffle(numbers)
    assert table_pages(PageTable(library, page_size=SIZE, **filters), numbers) == expected


def test_a_table_made_after_changes_matches_offset_again(library):
    now = time.time()
    everything = [entry.id for entry in library.search(limit=1000, trash="include").entries]
    # Added in the middle of the order (an import keeps its own time) and at the top.
    add(library, 100, now - 1000 + 20.5, prompt="red chair imported")
    add(library, 101, now, prompt="red chair newest")
    library.trash(everything[2:9])
    library.restore(everything[3:5])
    library.set_favourite(everything[10:20])
    library.empty_trash()  # rows deleted for good
    for filters in FILTERS:
        expected = offset_pages(library, **filters)
        table = PageTable(library, page_size=SIZE, **filters)
        assert table_pages(table, list(range(len(expected)))[::-1]) == expected, filters


def test_a_table_is_read_by_several_threads_at_once(library):
    expected = offset_pages(library)
    table = PageTable(library, page_size=SIZE)
    numbers = [number for number in range(len(expected)) for _ in range(3)]
    random.Random(5).shuffle(numbers)
    with ThreadPoolExecutor(4) as pool:
        pages = list(pool.map(table.page, numbers))
    assert [[entry.id for entry in page] for page in pages] == [expected[n] for n in numbers]


def test_key_after_and_from_key_step_through_the_search(library):
    newest_first = library.search("chair", limit=100).entries
    assert library.key_after("chair") == newest_first[0].rowid
    third = library.key_after("chair", key=newest_first[0].rowid, skip=2)
    assert third == newest_first[2].rowid
    assert library.key_after("chair", key=third, skip=len(newest_first)) is None
    page = library.search("chair", limit=3, from_key=third).entries
    assert [entry.id for entry in page] == [entry.id for entry in newest_first[2:5]]


def test_polling_for_changes_does_not_wait_for_a_reading_thread(library, tmp_path):
    holding, done = threading.Event(), threading.Event()
    waited_out = []

    def read_for_long() -> None:
        with library._lock:  # as a deep page read on the gallery's pool would
            holding.set()
            waited_out.append(not done.wait(10))

    with Library.open(tmp_path / "home", backup_interval_s=10**9) as other:
        add(other, 200, time.time())  # another process's commit
        reader = threading.Thread(target=read_for_long)
        reader.start()
        holding.wait(10)
        assert library.changed_elsewhere() is False  # busy: asked again at the next poll
        done.set()
        reader.join()
        assert waited_out == [False]  # the answer came while the reader still held the lock
        assert library.changed_elsewhere() is True
