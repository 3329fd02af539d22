"""The content filter: the user's word list, how a prompt is read into words, and the
decision each mode makes."""

from __future__ import annotations

import os
import random
import sys

import pytest

from desktop.content_filter import (
    DEFAULT_MODE,
    MODES,
    FilterDecision,
    LoadedTerms,
    check_prompt,
    find_terms,
    load_terms,
    read_terms,
    record,
    shipped_words_file,
    words_file,
)

TERMS = read_terms("nude\ngore\nblood soaked\n")


def found(prompt: str, terms=TERMS) -> tuple[str, ...]:
    return check_prompt(prompt, "", terms, "warn").matched


# --- the three modes -----------------------------------------------------------------------

def test_the_modes_and_the_default():
    assert MODES == ("off", "warn", "block")
    assert DEFAULT_MODE == "warn"


def test_off_reads_nothing():
    decision = check_prompt("gore and more gore", "", TERMS, "off")
    assert decision == FilterDecision("off")
    assert record(decision) is None


def test_warn_makes_the_picture_and_labels_it():
    decision = check_prompt("a knight, gore everywhere, nude statue", "", TERMS, "warn")
    assert decision.warned and not decision.blocked
    assert decision.matched == ("gore", "nude")
    assert "'gore'" in decision.sentence and "'nude'" in decision.sentence
    assert record(decision) == {"mode": "warn", "warned": ["gore", "nude"]}


def test_block_refuses_in_one_sentence_naming_the_first_term():
    decision = check_prompt("nude figure in gore", "", TERMS, "block")
    assert decision.blocked and not decision.warned
    assert decision.matched == ("nude", "gore")
    assert decision.sentence.startswith("The prompt was not used: it contains 'nude',")
    assert "'gore'" not in decision.sentence
    assert decision.sentence.endswith(".") and decision.sentence.count(".") == 1
    assert record(decision) == {"mode": "block", "blocked": ["nude", "gore"]}


@pytest.mark.parametrize("mode", ["warn", "block"])
def test_a_clean_prompt_passes_and_records_nothing(mode):
    decision = check_prompt("a red fox in the snow", "", TERMS, mode)
    assert decision == FilterDecision(mode)
    assert record(decision) is None


def test_an_unknown_mode_is_refused_in_one_sentence():
    with pytest.raises(ValueError) as refused:
        check_prompt("a fox", "", TERMS, "strict")
    message = str(refused.value)
    assert "'strict'" in message and message.count(".") == 1
    assert all(mode in message for mode in MODES)


@pytest.mark.parametrize("mode", MODES)
def test_the_negative_prompt_is_not_read(mode):
    decision = check_prompt("a quiet meadow", "gore, nude, blood soaked", TERMS, mode)
    assert decision.matched == () and not decision.blocked and not decision.warned


# --- normalising ---------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["NUDE", "Nude", "Nüde", "nudé", "ＮＵＤＥ"])
def test_case_and_accents_do_not_count(prompt):
    assert found(prompt) == ("nude",)


def test_accents_in_the_list_do_not_count_either():
    assert found("a cafe at night", read_terms("Café\n")) == ("Café",)


@pytest.mark.parametrize("prompt", [
    "blood soaked", "BLOOD   soaked", "blood-soaked", "blood_soaked", "blood.soaked",
    "blood\nsoaked", "blood -- soaked", "Blood_Soaked armour",
])
def test_spacing_hyphens_underscores_and_dots_are_one_space(prompt):
    assert found(prompt) == ("blood soaked",)


def test_a_term_written_with_hyphens_matches_spaced_words():
    assert found("blood  soaked", read_terms("Blood-Soaked\n")) == ("Blood-Soaked",)


def test_letters_spaced_out_are_separate_words():
    assert found("n s f w art", read_terms("nsfw\n")) == ()
    assert found("NSFW art", read_terms("nsfw\n")) == ("nsfw",)


# --- whole words and phrases ---------------------------------------------------------------

@pytest.mark.parametrize("prompt", [
    "a classic bass guitar", "assassin", "Scunthorpe town hall", "Sussex and Essex",
    "a sextant", "a gorge", "Gregory", "gored", "1girl",
])
def test_only_whole_words_match(prompt):
    terms = read_terms("ass\ncunt\nsex\ngore\ngirl\n")
    assert found(prompt, terms) == ()


def test_a_phrase_matches_only_its_words_side_by_side():
    assert found("soaked in blood") == ()
    assert found("blood red soaked") == ()
    assert found("blood") == ()


def test_a_phrase_does_not_span_the_prompt_s_parts():
    assert found("blood, soaked") == ()
    assert found("blood; soaked | blood:soaked") == ()


def test_a_longer_term_comes_before_a_shorter_one_at_the_same_word():
    terms = read_terms("blood\nblood soaked\n")
    assert found("blood soaked cloth", terms) == ("blood soaked", "blood")


def test_terms_come_in_the_order_they_appear_as_written_in_the_list():
    terms = read_terms("Nude\nGORE  # comment\nBlood-Soaked\n")
    assert found("gore first, then blood soaked, then nude, gore again", terms) == (
        "GORE", "Blood-Soaked", "Nude")


def test_plain_strings_are_read_as_terms():
    assert find_terms("a gory scene", ["Gory", "nude"]) == ("Gory",)


# --- prompt syntax -------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [
    "(nude:1.3)", "((nude))", "[nude]", "(nude)", "[[nude:0.5]]", r"\(nude\)",
    "{nude}", "(a portrait, nude:1.2)", "__nude__",
])
def test_weights_and_brackets_do_not_hide_a_word(prompt):
    assert found(prompt) == ("nude",)


def test_a_weight_between_words_does_not_break_a_phrase():
    assert found("(blood:1.2) soaked") == ("blood soaked",)
    assert found("((blood)) [soaked]") == ("blood soaked",)


def test_prompt_editing_steps_are_separate_parts():
    # "[blood:soaked:5]" shows "blood" and later "soaked", never the two side by side.
    assert found("[blood:soaked:5] cloth") == ()


@pytest.mark.parametrize("tag", [
    "<lora:nude_style:0.8>", "<lora:Nude-Style.v2:1>", "<lora:style nude>",
    "<lyco:NUDE_pack:0.6>", "<hypernet:nude:1>",
])
def test_a_lora_name_is_read_as_words(tag):
    assert found(f"a portrait {tag}") == ("nude",)


def test_a_lora_tag_s_kind_and_weight_are_not_read():
    terms = read_terms("lora\n0 8\n")
    assert found("a portrait <lora:style:0.8>", terms) == ()


def test_the_words_around_a_lora_tag_meet_as_the_text_encoder_reads_them():
    assert found("blood <lora:style:1> soaked") == ("blood soaked",)
    assert found("nu<lora:style:1>de") == ("nude",)


def test_a_lora_name_keeps_its_place_in_the_order():
    assert found("gore <lora:nude_style:1> blood soaked") == ("gore", "nude", "blood soaked")


# --- a long prompt -------------------------------------------------------------------------

def test_a_ten_thousand_word_prompt_is_checked_whole():
    rng = random.Random(21)
    vocabulary = [f"word{i}" for i in range(500)] + ["blood", "classic", "Nüde"]  # no "soaked"
    words = [rng.choice(vocabulary) for _ in range(10_000)]
    words[9_000:9_000] = ["blood-soaked"]
    words.append("(gore:1.4)")
    terms = read_terms("\n".join([f"term{i}" for i in range(2_000)]
                                 + ["gore", "blood soaked", "a b c d e f"]))
    assert found(" ".join(words), terms) == ("blood soaked", "gore")
    assert found(" ".join(words), [*terms, "nude"])[0] == "nude"


# --- the word list -------------------------------------------------------------------------

def test_the_shipped_list_is_found_explains_itself_and_has_terms():
    text = shipped_words_file().read_text(encoding="utf-8")
    assert text.startswith("#") and "Content filter" in text.split("\n\n")[0]
    terms = read_terms(text)
    assert {"nude", "gore", "blood soaked"} <= {t.written for t in terms}
    assert all("#" not in t.written for t in terms)


def test_asking_to_edit_copies_the_default_into_the_data_folder(tmp_path):
    path = words_file(tmp_path)
    assert path == tmp_path / "filter" / "blocked-terms.txt"
    assert path.read_bytes() == shipped_words_file().read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["blocked-terms.txt"]  # no temp left
    loaded = load_terms(tmp_path)
    assert loaded.message is None
    assert check_prompt("a gory scene", "", loaded, "block").blocked


def test_the_user_s_edits_are_honoured_and_never_overwritten(tmp_path):
    path = words_file(tmp_path)
    path.write_text("# mine\ndragon\n", encoding="utf-8")
    loaded = load_terms(tmp_path)
    assert [t.written for t in loaded.terms] == ["dragon"]
    assert found("a Dragon in gore", loaded) == ("dragon",)
    assert words_file(tmp_path).read_text(encoding="utf-8") == "# mine\ndragon\n"


def test_a_deleted_list_brings_the_default_back(tmp_path):
    words_file(tmp_path).unlink()
    assert found("gore", load_terms(tmp_path)) == ("gore",)


def test_an_empty_list_matches_nothing(tmp_path):
    words_file(tmp_path).write_text("# nothing here\n\n   \n", encoding="utf-8")
    loaded = load_terms(tmp_path)
    assert loaded == LoadedTerms((), None)
    assert check_prompt("nude gore", "", loaded, "block") == FilterDecision("block")


def test_comments_duplicates_and_a_byte_order_mark(tmp_path):
    words_file(tmp_path).write_bytes(
        "\ufeffdragon # big lizard\nDRAGON\n#gore\n!!!\nfire-breathing\n".encode())
    loaded = load_terms(tmp_path)
    assert [(t.written, t.words) for t in loaded.terms] == [
        ("dragon", ("dragon",)), ("fire-breathing", ("fire", "breathing"))]


def _falls_back(tmp_path, why: str):
    path = tmp_path / "filter" / "blocked-terms.txt"
    loaded = load_terms(tmp_path)
    assert loaded.terms == read_terms(shipped_words_file().read_text(encoding="utf-8"))
    assert f"'{path}'" in loaded.message and why in loaded.message
    assert loaded.message.endswith(".") and loaded.message.count(". ") == 0
    return loaded


def test_an_undecodable_list_falls_back_to_the_default_and_is_kept(tmp_path):
    path = words_file(tmp_path)
    path.write_bytes(b"dragon\n\xff\xfe\xfa not text\n")
    _falls_back(tmp_path, "not UTF-8")
    assert path.read_bytes() == b"dragon\n\xff\xfe\xfa not text\n"


def test_a_folder_in_the_list_s_place_falls_back_to_the_default(tmp_path):
    (tmp_path / "filter" / "blocked-terms.txt").mkdir(parents=True)
    _falls_back(tmp_path, "folder")
    assert (tmp_path / "filter" / "blocked-terms.txt").is_dir()


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="needs file permissions that bind (POSIX, not root)")
def test_an_unreadable_list_falls_back_to_the_default(tmp_path):
    path = words_file(tmp_path)
    path.chmod(0)
    try:
        _falls_back(tmp_path, "permission denied")
    finally:
        path.chmod(0o644)


def test_a_file_where_the_filter_folder_goes_is_left_alone(tmp_path):
    from engine.errors import EaselError

    (tmp_path / "filter").write_text("in the way", encoding="utf-8")
    loaded = load_terms(tmp_path)  # no list of the user's: the default, nothing to say
    assert loaded.message is None and found("gore", loaded) == ("gore",)
    with pytest.raises(EaselError) as refused:  # asking to edit it cannot make the copy
        words_file(tmp_path)
    assert "\n" not in str(refused.value)
    assert (tmp_path / "filter").read_text(encoding="utf-8") == "in the way"


def test_checking_a_prompt_writes_nothing(tmp_path):
    loaded = load_terms(tmp_path / "data")
    assert found("gore", loaded) == ("gore",) and loaded.message is None
    assert not (tmp_path / "data").exists()  # a failing command leaves nothing behind


def test_a_missing_shipped_list_is_said_in_one_sentence(tmp_path, monkeypatch):
    from desktop.content_filter import words
    from engine.errors import EaselError

    monkeypatch.setattr(words, "shipped_words_file", lambda: tmp_path / "gone.txt")
    with pytest.raises(EaselError, match=r"^Easel's default content-filter list .*gone\.txt"
                                         r"' cannot be read \(it is missing\); reinstall"):
        load_terms(tmp_path / "data")
    assert not (tmp_path / "data" / "filter" / "blocked-terms.txt").exists()
