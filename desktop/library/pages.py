"""One search's pictures read a page at a time at any depth: the gallery's scrolling.

SQL's OFFSET skips rows one by one, so the page 50,000 pictures down costs SQLite a scan of
those 50,000 (tens of milliseconds), and a scroll bar dragged through a big library asks for
such pages many times a second. Rows are kept newest first by key (creation time in
microseconds), so a page whose first key is known is read straight from the index.
``PageTable`` learns the first key of each page as it is needed, one page's hop at a time
from the last one it knows, so reaching page n costs one scan of n pages once, and every
later jump there costs one indexed read.

A table describes the library as it was: after any change (a picture added, trashed,
restored, a favourite set, another process's commit) positions move, so make a new one.
"""

from __future__ import annotations

import threading
from typing import Any

from desktop.library.rows import ImageEntry
from desktop.library.store import PAGE_SIZE, Library


class PageTable:
    """The pages of ``library.search(text, **filters)``, numbered from 0. Safe to use from
    several threads at once (the gallery reads pages on a pool)."""

    def __init__(self, library: Library, text: str = "", *, page_size: int = PAGE_SIZE,
                 **filters: Any) -> None:
        self.library = library
        self.text = text
        self.page_size = page_size
        self.filters = filters
        self._starts: list[int] = []  # the key of each page's first picture, as far as known
        self._complete = False  # the last page's start is known
        self._lock = threading.Lock()

    def page(self, number: int) -> list[ImageEntry]:
        """The pictures of page ``number``; empty past the end."""
        start = self.start_of(number)
        if start is None:
            return []
        return self.library.search(self.text, limit=self.page_size, from_key=start,
                                   **self.filters).entries

    def start_of(self, number: int) -> int | None:
        """The key of page ``number``'s first picture (None past the end), learning the
        starts of the pages before it first if they are not known yet."""
        if number < 0:
            return None
        while True:
            # One hop per turn of the lock, so a thread wanting a page already known (or a
            # nearer one) is not held up behind a long walk to a deep page.
            with self._lock:
                if number < len(self._starts):
                    return self._starts[number]
                if self._complete:
                    return None
                self._learn_next()

    def _learn_next(self) -> None:
        last = self._starts[-1] if self._starts else None
        start = self.library.key_after(self.text, key=last,
                                       skip=self.page_size if self._starts else 0,
                                       **self.filters)
        if start is None:
            self._complete = True
        else:
            self._starts.append(start)
