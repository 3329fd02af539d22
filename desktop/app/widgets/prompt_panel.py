"""The prompt panel: prompt, negative prompt, model, size, steps, guidance, scheduler, seed,
number of pictures, strength and number of variations (while there is a source picture),
and the Generate button."""

from __future__ import annotations

from PySide6.QtCore import QRegularExpression, QSignalBlocker, Qt, Signal
from PySide6.QtGui import QKeyEvent, QRegularExpressionValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.app.instructing import is_instruct_model
from desktop.app.prompt_weight import step_weight
from desktop.app.scheduler_names import display_name
from desktop.app.viewmodels.prompt import PromptViewModel
from desktop.app.widgets.icons import icon
from desktop.app.widgets.prompt_resources import PromptResourcesButton

# (label, engine.noise name, tooltip): the window's names for the three generators.
NOISE_SOURCES = (
    ("Easel", "numpy", "Easel's own random numbers (numpy)"),
    ("A1111 CPU", "torch-cpu", "torch's on the CPU: AUTOMATIC1111's RNG setting 'CPU'"),
    ("A1111 GPU", "torch-cuda", "torch's on an NVIDIA GPU: AUTOMATIC1111's default 'GPU' "
                                "(and 'NV'), on any computer"),
)
EMPHASIS_CHOICES = (("weights rescaled", "original"), ("weights not rescaled", "none"))

class PromptBox(QPlainTextEdit):
    """A multi-line prompt: Ctrl+Enter generates; Up/Down in an empty box walk the history;
    Ctrl+Up / Ctrl+Down weigh the selected words (or the word under the cursor) more or less,
    as (words:1.1), as AUTOMATIC1111 does."""

    submitted = Signal()
    walk = Signal(bool)  # True: older

    def __init__(self, placeholder: str, walks_history: bool,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText(placeholder)
        self.setTabChangesFocus(True)
        self._walks = walks_history
        self.walking = False  # the text came from the history, so Up/Down go on walking

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key, modifiers = event.key(), event.modifiers()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and (
                modifiers & Qt.KeyboardModifier.ControlModifier):
            self.submitted.emit()
            return
        if key in (Qt.Key.Key_Up, Qt.Key.Key_Down) and (
                modifiers & Qt.KeyboardModifier.ControlModifier):
            self.weigh_selection(key == Qt.Key.Key_Up)
            return
        empty_or_walking = not self.toPlainText() or self.walking
        if self._walks and key in (Qt.Key.Key_Up, Qt.Key.Key_Down) and empty_or_walking:
            self.walk.emit(key == Qt.Key.Key_Up)
            return
        self.walking = False
        super().keyPressEvent(event)

    def weigh_selection(self, up: bool) -> None:
        """Weigh the selection (or the word under the cursor) one step more or less, as one
        undoable edit, and keep the words selected so the next press goes on."""
        text = self.toPlainText()
        cursor = self.textCursor()
        start = _python_index(text, cursor.selectionStart())
        end = _python_index(text, cursor.selectionEnd())
        edit = step_weight(text, start, end, up)
        if edit is None:
            return
        self.walking = False
        cursor.beginEditBlock()
        cursor.select(cursor.SelectionType.Document)
        cursor.insertText(edit.text)
        cursor.endEditBlock()
        cursor.setPosition(_qt_index(edit.text, edit.start))
        cursor.setPosition(_qt_index(edit.text, edit.end), cursor.MoveMode.KeepAnchor)
        self.setTextCursor(cursor)


def _python_index(text: str, position: int) -> int:
    """A Qt text position (UTF-16 units) as an index into the Python string."""
    return len(text.encode("utf-16-le")[:2 * position].decode("utf-16-le", errors="ignore"))


def _qt_index(text: str, index: int) -> int:
    return len(text[:index].encode("utf-16-le")) // 2


class PromptPanel(QWidget):
    def __init__(self, model: PromptViewModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vm = model
        self.prompt = PromptBox("What should the picture show?  (Ctrl+Enter to generate; "
                                "Up/Down for earlier prompts)", True)
        self.prompt.setAccessibleName("Prompt")
        # About five lines: room enough to write in, and the prompt history below keeps its
        # share of the column at 800 px.
        self.prompt.setMaximumHeight(5 * self.prompt.fontMetrics().lineSpacing() + 16)
        self.resources = PromptResourcesButton(model.resources, self.prompt)
        self.negative = PromptBox("What to avoid (optional)", False)
        self.negative.setAccessibleName("Negative prompt")
        self.negative.setMaximumHeight(70)
        self.model_box = QComboBox()
        self.model_box.setToolTip("The model that makes the picture; its family in brackets")
        self.size_box = QComboBox()
        self.size_box.setToolTip("Sizes that suit this model, in pixels")
        self.steps = QSpinBox()
        self.steps.setRange(1, 200)
        self.steps.setToolTip("More steps: more detail, more time")
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setToolTip("How closely to follow the prompt (0 or 1: off)")
        self.scheduler = QComboBox()
        self.scheduler.setToolTip("The sampling method")
        self.seed = QLineEdit()
        self.seed.setValidator(QRegularExpressionValidator(QRegularExpression(r"\d{1,18}")))
        self.seed.setToolTip("The same seed and settings make the same picture")
        self.seed.setAccessibleName("Seed")
        self.seed_lock = QToolButton()
        self.seed_lock.setCheckable(True)
        self.seed_lock.setToolTip("Keep this seed for the next pictures (unlocked: a new "
                                  "random seed each time)")
        self.new_seed = QToolButton()
        self.new_seed.setIcon(icon("dice"))
        self.new_seed.setToolTip("New random seed")
        # Where the seed's numbers come from: Easel's own, or torch's, to make pictures from
        # AUTOMATIC1111 and other torch-based tools again (Reuse parameters picks it).
        self.noise = QComboBox()
        for label, name, tip in NOISE_SOURCES:
            self.noise.addItem(label, name)
            self.noise.setItemData(self.noise.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.noise.setToolTip("Where the seed's random numbers come from")
        self.noise.setAccessibleName("Noise")
        self.emphasis = QComboBox()
        for label, name in EMPHASIS_CHOICES:
            self.emphasis.addItem(label, name)
        self.emphasis.setToolTip("How (words:1.2) weights in the prompt act, as AUTOMATIC1111's "
                                 "Emphasis setting: rescaled to the prompt's mean (its default) "
                                 "or not (its 'No norm')")
        self.emphasis.setAccessibleName("Weights")
        self.count = QSpinBox()
        self.count.setRange(1, 16)
        self.count.setToolTip("How many pictures Generate, Edit, Inpaint and Outpaint make "
                              "(seed, seed + 1, …)")
        self.variations = QSpinBox()
        self.variations.setRange(1, 16)
        self.variations.setToolTip("How many pictures Variations make (as many as `easel "
                                   "variations` by default)")
        self.variations.setAccessibleName("Variations")
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.05, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setToolTip("How much Variations, Edit and Inpaint redraw the source "
                                 "picture: low keeps it close, 1 keeps only a trace")
        self.strength.setAccessibleName("Strength")
        self.image_guidance = QDoubleSpinBox()
        self.image_guidance.setRange(0.0, 10.0)
        self.image_guidance.setSingleStep(0.1)
        self.image_guidance.setToolTip("How closely Instruct keeps the source picture: higher "
                                       "keeps more of it (below 1: off)")
        self.image_guidance.setAccessibleName("Image guidance")
        self.hires_scale = QDoubleSpinBox()
        self.hires_scale.setRange(1.0, 4.0)
        self.hires_scale.setSingleStep(0.25)
        self.hires_scale.setSuffix(" ×")
        self.hires_scale.setSpecialValueText("Off")  # shown at the minimum, 1
        self.hires_scale.setToolTip("Hires fix: make the picture at the chosen size, enlarge it "
                                    "this many times and redraw the detail (Off: no)")
        self.hires_scale.setAccessibleName("Hires fix scale")
        self.hires_strength = QDoubleSpinBox()
        self.hires_strength.setRange(0.05, 1.0)
        self.hires_strength.setSingleStep(0.05)
        self.hires_strength.setPrefix("redraw ")
        self.hires_strength.setToolTip("How much the enlarged picture is redrawn: more adds "
                                       "detail, above about 0.5 subjects start to repeat")
        self.hires_strength.setAccessibleName("Hires fix strength")
        self.generate_button = QPushButton(icon("generate"), "Generate")
        self.generate_button.setToolTip("Make the picture (Ctrl+Enter)")
        self.generate_button.setDefault(True)
        self._layout()
        self._connect()
        self._models_changed()
        self.show_source_rows(False)  # until a picture is dropped or chosen

    def _layout(self) -> None:
        seed_row = QHBoxLayout()
        seed_row.setContentsMargins(0, 0, 0, 0)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_lock)
        seed_row.addWidget(self.new_seed)
        seed_row.addWidget(self.noise)
        seed_holder = QWidget()
        seed_holder.setLayout(seed_row)
        hires_row = QHBoxLayout()
        hires_row.setContentsMargins(0, 0, 0, 0)
        hires_row.addWidget(self.hires_scale, 1)
        hires_row.addWidget(self.hires_strength, 1)
        hires_holder = QWidget()
        hires_holder.setLayout(hires_row)
        form = QFormLayout()
        form.addRow("Model", self.model_box)
        form.addRow("Size", self.size_box)
        form.addRow("Steps", self.steps)
        # The prompt's (word:1.2) weights beside guidance: both say how the prompt steers.
        guidance_row = QHBoxLayout()
        guidance_row.setContentsMargins(0, 0, 0, 0)
        guidance_row.addWidget(self.guidance, 1)
        guidance_row.addWidget(self.emphasis, 1)
        guidance_holder = QWidget()
        guidance_holder.setLayout(guidance_row)
        form.addRow("Guidance", guidance_holder)
        form.addRow("Scheduler", self.scheduler)
        form.addRow("Seed", seed_holder)
        form.addRow("Pictures", self.count)
        form.addRow("Hires fix", hires_holder)
        form.addRow("Strength", self.strength)
        form.addRow("Variations", self.variations)
        form.addRow("Image guidance", self.image_guidance)
        self.form_layout = form  # rows shown only for some models
        layout = QVBoxLayout(self)
        prompt_row = QHBoxLayout()  # the LoRA / embedding picker beside the prompt's label
        prompt_row.addWidget(QLabel("Prompt"), 1)
        prompt_row.addWidget(self.resources)
        layout.addLayout(prompt_row)
        layout.addWidget(self.prompt, 2)
        layout.addWidget(QLabel("Negative prompt"))
        layout.addWidget(self.negative, 1)
        layout.addLayout(form)
        layout.addWidget(self.generate_button)

    def _connect(self) -> None:
        vm = self.vm
        vm.form_changed.connect(self.show_form)
        vm.models_changed.connect(self._models_changed)
        self.prompt.textChanged.connect(self._prompt_typed)
        self.prompt.walk.connect(self._walk)
        self.negative.textChanged.connect(
            lambda: vm.update(negative_prompt=self.negative.toPlainText()))
        self.model_box.activated.connect(
            lambda: vm.choose_model(self.model_box.currentData()))
        self.size_box.activated.connect(self._size_chosen)
        self.steps.valueChanged.connect(lambda value: vm.update(steps=value))
        self.guidance.valueChanged.connect(lambda value: vm.update(guidance=value))
        self.scheduler.activated.connect(
            lambda: vm.update(scheduler=self.scheduler.currentData()))
        self.seed.textEdited.connect(lambda text: vm.update(seed=int(text or 0)))
        self.seed_lock.toggled.connect(self._seed_locked)
        self.new_seed.clicked.connect(vm.new_random_seed)
        self.noise.activated.connect(lambda: vm.update(generator=self.noise.currentData()))
        self.emphasis.activated.connect(lambda: vm.update(emphasis=self.emphasis.currentData()))
        self.count.valueChanged.connect(lambda value: vm.update(count=value))
        self.variations.valueChanged.connect(lambda value: vm.update(variations=value))
        self.strength.valueChanged.connect(lambda value: vm.update(strength=value))
        self.image_guidance.valueChanged.connect(
            lambda value: vm.update(image_guidance=value))
        self.hires_scale.valueChanged.connect(lambda value: vm.update(hires_scale=value))
        self.hires_scale.valueChanged.connect(
            lambda value: self.hires_strength.setEnabled(value > 1))
        self.hires_strength.valueChanged.connect(lambda value: vm.update(hires_strength=value))

    def _models_changed(self) -> None:
        with QSignalBlocker(self.model_box):
            self.model_box.clear()
            for choice in self.vm.models:
                self.model_box.addItem(choice.label, choice.name)
                self.model_box.setItemData(self.model_box.count() - 1,
                                           f"{choice.family} model"
                                           + (", built in" if choice.built_in else ""),
                                           Qt.ItemDataRole.ToolTipRole)
            if self.vm.folder_models:  # the user's other model folders, imported when picked
                self.model_box.insertSeparator(self.model_box.count())
            for found in self.vm.folder_models:
                self.model_box.addItem(found.label, found.name)
                self.model_box.setItemData(self.model_box.count() - 1, found.tooltip,
                                           Qt.ItemDataRole.ToolTipRole)
        self.show_form()

    def show_form(self) -> None:
        """Show the view-model's form (after a model change, reuse or history step)."""
        form = self.vm.form
        widgets = (self.prompt, self.negative, self.model_box, self.size_box, self.steps,
                   self.guidance, self.scheduler, self.seed, self.seed_lock, self.noise,
                   self.emphasis, self.count,
                   self.strength, self.variations, self.image_guidance, self.hires_scale,
                   self.hires_strength)
        blockers = [QSignalBlocker(widget) for widget in widgets]
        if self.prompt.toPlainText() != form.prompt:
            self.prompt.setPlainText(form.prompt)
        if self.negative.toPlainText() != form.negative_prompt:
            self.negative.setPlainText(form.negative_prompt)
        self.model_box.setCurrentIndex(max(self.model_box.findData(form.model), 0))
        self._fill_sizes()
        self.steps.setValue(form.steps)
        self.guidance.setValue(form.guidance)
        self.scheduler.clear()
        for name in self.vm.schedulers() or [form.scheduler]:
            self.scheduler.addItem(display_name(name), name)  # the name users know
        self.scheduler.setCurrentIndex(max(self.scheduler.findData(form.scheduler), 0))
        self.seed.setText(str(form.seed))
        self.seed_lock.setChecked(form.seed_locked)
        self.seed_lock.setIcon(icon("lock" if form.seed_locked else "unlock"))
        self.noise.setCurrentIndex(max(self.noise.findData(form.generator), 0))
        self.emphasis.setCurrentIndex(max(self.emphasis.findData(form.emphasis), 0))
        self.count.setValue(form.count)
        self.variations.setValue(form.variations)
        self.strength.setValue(form.strength)
        self.image_guidance.setValue(form.image_guidance)
        self.hires_scale.setValue(form.hires_scale)
        self.hires_strength.setValue(form.hires_strength)
        self.hires_strength.setEnabled(form.hires_scale > 1)
        # Only an InstructPix2Pix model has a second guidance, for its source picture.
        self.form_layout.setRowVisible(self.image_guidance, is_instruct_model(self.vm.model()))
        del blockers

    def show_source_rows(self, has_source: bool) -> None:
        """Strength and the number of variations apply to a source picture: shown while
        there is one."""
        self.form_layout.setRowVisible(self.strength, has_source)
        self.form_layout.setRowVisible(self.variations, has_source)

    def _fill_sizes(self) -> None:
        form = self.vm.form
        self.size_box.clear()
        self.size_box.setToolTip(self.vm.size_tooltip())  # says the size rule
        presets = self.vm.size_presets()
        for preset in presets:
            self.size_box.addItem(preset.label, (preset.width, preset.height))
        current = self.size_box.findData((form.width, form.height))
        if current < 0:  # a reused picture's own size: offer it too
            self.size_box.insertItem(0, f"{form.width} × {form.height}",
                                     (form.width, form.height))
            current = 0
        self.size_box.setCurrentIndex(current)

    def _size_chosen(self) -> None:
        width, height = self.size_box.currentData()
        self.vm.update(width=width, height=height)

    def _seed_locked(self, locked: bool) -> None:
        self.vm.update(seed_locked=locked)
        self.seed_lock.setIcon(icon("lock" if locked else "unlock"))

    def _prompt_typed(self) -> None:
        self.vm.update(prompt=self.prompt.toPlainText())
        if not self.prompt.walking:
            self.vm.stop_walking()  # typed over: the next Up starts from the newest again

    def _walk(self, older: bool) -> None:
        text = self.vm.history_step(older)
        if text is None and older:
            return  # at the oldest: stay
        with QSignalBlocker(self.prompt):
            self.prompt.setPlainText(text or "")
        self.vm.update(prompt=text or "")
        self.prompt.walking = bool(text)
        cursor = self.prompt.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.prompt.setTextCursor(cursor)
