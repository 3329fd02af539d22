"""The content filter: a prompt is checked against the user's word list before a picture
is made, and the user chooses what a match does ("off", "warn" or "block").

Qt-free, so the window, the command line and the tests share it. ``load_terms`` reads the
list (``words``), ``check_prompt`` decides (``prompt_filter``), ``record`` is what a
picture's metadata keeps; how a prompt is read into words is in ``normalise``.
"""

from desktop.content_filter.prompt_filter import (
    DEFAULT_MODE,
    MODES,
    FilterDecision,
    UnknownFilterMode,
    check_mode,
    check_prompt,
    find_terms,
    record,
)
from desktop.content_filter.words import (
    LoadedTerms,
    Term,
    load_terms,
    read_terms,
    shipped_words_file,
    words_file,
)

__all__ = [
    "DEFAULT_MODE", "MODES", "FilterDecision", "LoadedTerms", "Term", "UnknownFilterMode",
    "check_mode", "check_prompt", "find_terms", "load_terms", "read_terms", "record",
    "shipped_words_file", "words_file",
]
