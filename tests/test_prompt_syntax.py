"""Prompt weights and BREAK read as AUTOMATIC1111's parse_prompt_attention reads them, with
the two refusals Easel adds (a closing bracket that closes nothing, a weight that is not a
number), each in one sentence."""

from __future__ import annotations

import pytest

from engine.errors import BadRequest
from engine.prompt_syntax import parse_prompt


def pieces(prompt: str) -> list[tuple[str, float]]:
    (section,) = parse_prompt(prompt).sections
    return list(section)


# A1111's own docstring examples, with its exact numbers (float products in its order).
@pytest.mark.parametrize(("prompt", "expected"), [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
      ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
])
def test_a1111_docstring_examples(prompt, expected):
    assert pieces(prompt) == expected


def test_square_brackets_divide_and_nesting_multiplies():
    assert pieces("[a] [[b]] ((c))") == [("a", 1 / 1.1), (" ", 1.0), ("b", 1 / 1.1 / 1.1),
                                         (" ", 1.0), ("c", 1.1 * 1.1)]
    assert pieces("(a (b:2) c:0.5)") == [("a ", 0.5), ("b", 1.0), (" c", 0.5)]
    assert pieces("(a:-1)") == [("a", -1.0)]


def test_brackets_left_open_weigh_to_the_end_and_are_reported():
    parsed = parse_prompt("a [b (c")
    assert parsed.sections == ((("a ", 1.0), ("b ", 1 / 1.1), ("c", 1.1 / 1.1)),)
    assert parsed.unclosed == "[("
    assert parse_prompt("(a) b").unclosed == ""


def test_escapes_and_a_lone_backslash():
    assert pieces(r"\(a\) \[b\] c\\d") == [("(a) [b] c\\d", 1.0)]
    assert pieces("(x \\) y)") == [("x ) y", 1.1)]
    assert pieces("a\\b") == [("ab", 1.0)]  # A1111 drops a backslash that escapes nothing


def test_colons_that_are_not_weights_stay_text():
    assert pieces("(time: noon)") == [("time: noon", 1.1)]
    assert pieces("style: photo, 16:9 ratio") == [("style: photo, 16:9 ratio", 1.0)]
    assert pieces("(a:)") == [("a:", 1.1)]
    assert pieces("(a:1.3:2)") == [("a:1.3", 2.0)]  # only the last colon weighs
    assert pieces("(ratio 16:9)") == [("ratio 16", 9.0)]  # as A1111, odd as it is


def test_break_starts_sections_and_takes_its_spaces():
    assert parse_prompt("a cat BREAK a dog").sections == ((("a cat", 1.0),), (("a dog", 1.0),))
    # As A1111, a leading BREAK leaves an empty first section, a trailing one an empty last.
    assert parse_prompt("BREAK a").sections == ((("", 1.0),), (("a", 1.0),))
    assert parse_prompt("a BREAK").sections == ((("a", 1.0),), (("", 1.0),))
    assert parse_prompt("BREAKFAST, a break").sections == ((("BREAKFAST, a break", 1.0),),)
    # Inside brackets BREAK still breaks, and the weight carries over (A1111 would read the
    # word "BREAK" there, weighted -1.1).
    assert parse_prompt("(a BREAK b)").sections == ((("a", 1.1),), (("b", 1.1),))


def test_merging_joins_only_equal_neighbours():
    assert pieces("(a)(b)[c]") == [("ab", 1.1), ("c", 1 / 1.1)]
    assert pieces("a (b:1.0) c") == [("a b c", 1.0)]
    assert pieces("") == [("", 1.0)]


@pytest.mark.parametrize(("prompt", "message"), [
    ("a dog)", "The prompt has a ')' that closes no '(' (at character 6); write '\\)' for the "
               "character itself."),
    ("((red) hair))", "The prompt has a ')' that closes no '(' (at character 13)"),
    ("a [dog", None),  # open: fine
    ("(a] b", "The prompt has a ']' that closes no '[' (at character 3)"),
    ("cat :1.5)", "The prompt has a ')' that closes no '(' (at character 9)"),
    ("(hair:1.2.3)", "The weight '1.2.3' in the prompt (at character 7) is not a plain number; "
                     "write it like (words:1.2)."),
    ("(hair:high)", "The weight 'high' in the prompt (at character 7) is not a plain number"),
    ("(hair: 1.5)", "The weight ' 1.5' in the prompt"),
    ("(hair:1,5)", "The weight '1,5' in the prompt"),
    ("(hair:1e3)", "The weight '1e3' in the prompt"),
    ("(hair:" + "9" * 400 + ")", "The weight '" + "9" * 20 + "…' in the prompt"),
])
def test_bad_input_is_one_sentence(prompt, message):
    if message is None:
        parse_prompt(prompt)
        return
    with pytest.raises(BadRequest) as error:
        parse_prompt(prompt)
    text = str(error.value)
    assert text.startswith(message)
    assert text.count(". ") == 0 and text.endswith(".")


def test_the_label_names_which_prompt():
    with pytest.raises(BadRequest, match="^The negative prompt has a"):
        parse_prompt("blurry)", "negative prompt")
