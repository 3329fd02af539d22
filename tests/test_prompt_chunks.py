"""Long prompts cut into 77-token chunks as AUTOMATIC1111 cuts them: 75 tokens each between
start and end tokens, the comma backtrack, BREAK, and SD 2.x's pad token after the first end."""

from __future__ import annotations

from engine.prompt_chunks import SpecialTokens, make_chunks
from engine.prompt_syntax import parse_prompt
from engine.tokenizer import PromptTokenizer

START, END, PAD, COMMA = 49406, 49407, 0, 267
SD1 = SpecialTokens(START, END, END, COMMA)
SD2 = SpecialTokens(START, END, PAD, COMMA)
WORD = 1000  # any token that is not a comma


def words(count: int, first: int = WORD) -> list[int]:
    return list(range(first, first + count))


def test_a_short_prompt_is_one_chunk_padded_with_the_end_token():
    (chunk,) = make_chunks([[([5, 6], 1.0), ([7], 1.5)]], SD1)
    assert chunk.ids == (START, 5, 6, 7) + (END,) * 73
    assert chunk.weights == (1.0, 1.0, 1.0, 1.5) + (1.0,) * 73


def test_sd2_pads_after_the_first_end_token_with_its_pad_token():
    (chunk,) = make_chunks([[([5, 6], 1.0)]], SD2)
    assert chunk.ids == (START, 5, 6, END) + (PAD,) * 73
    (empty,) = make_chunks([[([], 1.0)]], SD2)
    assert empty.ids == (START, END) + (PAD,) * 75


def test_exactly_75_tokens_fill_one_chunk_and_76_make_two():
    (full,) = make_chunks([[(words(75), 1.0)]], SD2)
    assert full.ids == (START, *words(75), END)
    first, second = make_chunks([[(words(76), 1.2)]], SD2)
    assert first.ids == (START, *words(75), END)
    assert second.ids == (START, WORD + 75, END) + (PAD,) * 74
    assert second.weights == (1.0, 1.2) + (1.0,) * 75


def test_the_words_after_a_comma_near_the_end_move_to_the_next_chunk():
    # A comma at position 60 of 75: the 14 tokens after it move when the 76th arrives.
    tokens = words(60) + [COMMA] + words(20, 2000)
    first, second = make_chunks([[(tokens, 1.0)]], SD1)
    assert first.ids == (START, *words(60), COMMA) + (END,) * 15
    assert second.ids[:21] == (START, *words(20, 2000))
    assert second.ids[21:] == (END,) * 56


def test_a_comma_further_back_than_20_tokens_is_not_used():
    # A1111 moves when the comma is at most 20 places from the chunk's end (position 75).
    tokens = words(55) + [COMMA] + words(30, 2000)  # comma at 55: its 19 followers move
    first, second = make_chunks([[(tokens, 1.0)]], SD1)
    assert first.ids[1:58] == (*words(55), COMMA, END)
    assert second.ids[1:31] == tuple(words(30, 2000))
    tokens = words(54) + [COMMA] + words(30, 2000)  # comma at 54: a plain cut
    first, second = make_chunks([[(tokens, 1.0)]], SD1)
    assert first.ids == (START, *words(54), COMMA, *words(20, 2000), END)
    assert second.ids[1:11] == tuple(words(10, 2020))


def test_a_comma_as_the_76th_token_starts_the_next_chunk():
    first, second = make_chunks([[(words(75) + [COMMA, 5], 1.0)]], SD1)
    assert first.ids == (START, *words(75), END)
    assert second.ids[:4] == (START, COMMA, 5, END)


def test_moved_words_keep_their_weights():
    tokens = [(words(70), 1.0), ([COMMA], 1.0), (words(10, 2000), 1.3)]
    first, second = make_chunks([tokens], SD1)
    assert first.weights[72:] == (1.0,) * 5
    assert second.weights[:11] == (1.0,) + (1.3,) * 10


def test_break_ends_a_chunk_even_an_empty_one():
    chunks = make_chunks([[([5], 1.0)], [([6], 1.0)]], SD1)
    assert [chunk.ids[:3] for chunk in chunks] == [(START, 5, END), (START, 6, END)]
    # "BREAK a": an empty chunk first; "a BREAK": no empty chunk at the end (as A1111).
    empty_first = make_chunks([[([], 1.0)], [([5], 1.0)]], SD1)
    assert [chunk.ids[:3] for chunk in empty_first] == [(START, END, END), (START, 5, END)]
    assert len(make_chunks([[([5], 1.0)], [([], 1.0)]], SD1)) == 1
    # A full chunk then BREAK: the break starts no second empty chunk before the next words.
    full = make_chunks([[(words(75), 1.0)], [([5], 1.0)]], SD1)
    assert len(full) == 2 and full[1].ids[:3] == (START, 5, END)


def test_a_real_long_prompt_through_the_clip_tokenizer(installed_tiny_sd2):
    tokenizer = PromptTokenizer(installed_tiny_sd2 / "tokenizer", 77)
    prompt = ", ".join(f"a (red:1.2) lighthouse number {n}" for n in range(20)) + " BREAK sky"
    sections = [[(tokenizer.piece_ids(text), weight) for text, weight in section]
                for section in parse_prompt(prompt).sections]
    chunks = make_chunks(sections, tokenizer.special_tokens)
    assert tokenizer.special_tokens == SpecialTokens(START, END, PAD, COMMA)
    assert len(chunks) == 3 and all(len(chunk.ids) == 77 for chunk in chunks)
    red = tokenizer.piece_ids("red")[0]
    for chunk in chunks:
        assert chunk.ids[0] == START
        end = chunk.ids.index(END)
        assert set(chunk.ids[end + 1:]) <= {PAD}
        assert all((weight == 1.2) == (token == red)
                   for token, weight in zip(chunk.ids, chunk.weights, strict=True))
    # The first chunk ends at a comma (backtracked), the last holds only "sky".
    assert chunks[0].ids[chunks[0].ids.index(END) - 1] == COMMA
    assert chunks[2].ids[:3] == (START, *tokenizer.piece_ids("sky"), END)
