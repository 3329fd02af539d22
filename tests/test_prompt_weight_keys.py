"""Ctrl+Up / Ctrl+Down in the prompt box weigh words as AUTOMATIC1111's edit-attention does:
the text rule without Qt, then the key press in a real prompt box."""

from __future__ import annotations

import pytest

from desktop.app.prompt_weight import Edit, step_weight


def press(text: str, start: int, end: int, *ups: bool) -> Edit:
    edit = Edit(text, start, end)
    for up in ups:
        edit = step_weight(edit.text, edit.start, edit.end, up)
    return edit


def test_selected_words_are_wrapped_and_stepped_by_a_tenth():
    text = "a red car on a hill"
    assert press(text, 2, 9, True) == Edit("a (red car:1.1) on a hill", 3, 10)
    assert press(text, 2, 9, True, True, True).text == "a (red car:1.3) on a hill"
    assert press(text, 2, 9, False).text == "a (red car:0.9) on a hill"
    assert press(text, 2, 9, True, True, False).text == "a (red car:1.1) on a hill"


def test_back_at_one_the_brackets_go():
    assert press("a red car", 2, 5, True, False) == Edit("a red car", 2, 5)
    assert press("(red:1.1) car", 1, 4, False) == Edit("red car", 0, 3)


def test_without_a_selection_the_group_or_word_under_the_cursor_is_taken():
    assert press("a big (red car:1.2), sky", 12, 12, True).text == "a big (red car:1.3), sky"
    assert press("a big (red car:1.2), sky", 3, 3, False) == Edit(
        "a (big:0.9) (red car:1.2), sky", 3, 6)
    # Word ends are A1111's delimiters: punctuation and spaces.
    assert press("sky,cloud.sun", 6, 6, True).text == "sky,(cloud:1.1).sun"
    # "(words)" without a weight: the word inside is weighted on its own.
    assert press("a (red), x", 4, 4, True).text == "a ((red:1.1)), x"


def test_trailing_spaces_stay_outside_and_nothing_to_weigh_is_no_edit():
    assert press("cat  dog", 0, 5, True).text == "(cat:1.1)  dog"
    assert step_weight("a  b", 2, 2, True) is None
    assert step_weight("", 0, 0, False) is None


def test_weights_are_written_as_a1111_writes_them():
    many = press("cat", 0, 3, *([True] * 10))
    assert many.text == "(cat:2.0)"  # no 1.9999999999999998
    assert press("(cat:0.1)", 1, 4, False).text == "(cat:0.0)"
    assert press("(cat:0.0)", 1, 4, False).text == "(cat:-0.1)"
    assert press("(cat:9.9)", 1, 4, True).text == "(cat:10)"


@pytest.mark.parametrize(("key", "expected"), [("Up", "a (red:1.1) car"),
                                               ("Down", "a (red:0.9) car")])
def test_the_key_press_in_the_prompt_box(qtbot, key, expected):
    from PySide6.QtCore import Qt

    from desktop.app.widgets.prompt_panel import PromptBox

    box = PromptBox("prompt", walks_history=True)
    qtbot.addWidget(box)
    walked = []
    box.walk.connect(walked.append)
    box.setPlainText("a red car")
    cursor = box.textCursor()
    cursor.setPosition(3)  # inside "red", nothing selected
    box.setTextCursor(cursor)
    qt_key = getattr(Qt.Key, f"Key_{key}")
    qtbot.keyClick(box, qt_key, Qt.KeyboardModifier.ControlModifier)
    assert box.toPlainText() == expected
    assert box.textCursor().selectedText() == "red"  # ready for the next press
    qtbot.keyClick(box, qt_key, Qt.KeyboardModifier.ControlModifier)
    assert box.toPlainText() == expected.replace("1.1", "1.2").replace("0.9", "0.8")
    box.undo()  # one press, one undo step
    assert box.toPlainText() == expected
    assert walked == []  # Ctrl+Up is not the history's Up


def test_non_ascii_text_keeps_the_cursor_on_the_word(qtbot):
    from PySide6.QtCore import Qt

    from desktop.app.widgets.prompt_panel import PromptBox

    box = PromptBox("prompt", walks_history=False)
    qtbot.addWidget(box)
    box.setPlainText("🦊 fox in snow")
    cursor = box.textCursor()
    cursor.setPosition(len("🦊 fox".encode("utf-16-le")) // 2)  # Qt counts UTF-16 units
    box.setTextCursor(cursor)
    qtbot.keyClick(box, Qt.Key.Key_Up, Qt.KeyboardModifier.ControlModifier)
    assert box.toPlainText() == "🦊 (fox:1.1) in snow"
    assert box.textCursor().selectedText() == "fox"
