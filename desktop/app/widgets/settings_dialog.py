"""Settings: provider order, data folder, metadata in copies, theme, models kept loaded,
CPU threads, the upscaler for Upscale and hires fix, whether downloaded models are kept, and
what pictures carry and prompts may hold (``responsible_settings``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QWidget,
)

from desktop.app.widgets.responsible_settings import ResponsibleSettings
from desktop.paths import standard_data_dir
from desktop.settings import (
    Settings,
    data_location,
    with_changes,
)

# The provider orders offered, best first; the engine skips those this machine lacks and the
# status line says why.
PROVIDER_ORDERS = (
    ("Best available", ()),
    ("CPU only", ("cpu",)),
    ("CUDA, then CPU", ("cuda", "cpu")),
    ("TensorRT, CUDA, then CPU", ("tensorrt", "cuda", "cpu")),
    ("DirectML, then CPU (Windows)", ("directml", "cpu")),
    ("Core ML, then CPU (macOS)", ("coreml", "cpu")),
)
THEMES = (("Follow the system", "system"), ("Light", "light"), ("Dark", "dark"))
GPU_PRECISIONS = (("Half (fp16): faster, half the memory", "auto"),
                  ("Full (fp32): for a model that draws black pictures in fp16", "fp32"))


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, upscalers: list[str] | None = None,
                 parent: QWidget | None = None, data_in_use: Path | None = None,
                 open_word_list: Callable[[], None] | None = None) -> None:
        """``data_in_use``: the data folder this run really uses (the library's);
        ``open_word_list`` opens the content filter's word list for editing."""
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._settings = settings
        self.providers = QComboBox()
        for label, order in PROVIDER_ORDERS:
            self.providers.addItem(label, order)
        self.providers.setCurrentIndex(max(self.providers.findData(settings.providers), 0))
        self.providers.setToolTip("Where pictures are made; the status line says what is used")
        self.precision = QComboBox()
        for label, name in GPU_PRECISIONS:
            self.precision.addItem(label, name)
        self.precision.setCurrentIndex(max(self.precision.findData(settings.gpu_precision), 0))
        self.precision.setToolTip("How a GPU computes; the CPU always computes in full "
                                  "precision. The status line says which is in use")
        self.folder = QLineEdit(settings.data_folder or "")
        self.folder.setPlaceholderText(f"the standard place: {standard_data_dir()}")
        self.folder.setToolTip("Where pictures, models and the library are kept, from the "
                               "next start")
        # Where the data really is now: EASEL_HOME may point elsewhere than this setting.
        self.location = QLabel(data_location(settings, data_in_use)
                               if data_in_use is not None else "")
        self.location.setWordWrap(True)
        self.location.setVisible(data_in_use is not None)
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._choose_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        self.metadata = QCheckBox("Put the prompt and settings in pictures dragged or copied out")
        self.metadata.setChecked(settings.embed_metadata)
        self.theme = QComboBox()
        for label, name in THEMES:
            self.theme.addItem(label, name)
        self.theme.setCurrentIndex(max(self.theme.findData(settings.theme), 0))
        self.kept = QSpinBox()
        self.kept.setRange(1, 8)
        self.kept.setValue(settings.models_kept_loaded)
        self.kept.setToolTip("More models in memory switch faster but use more memory")
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("all cores")
        self.threads.setValue(settings.cpu_threads)
        self.upscaler = QComboBox()
        self.upscaler.addItem("First installed" if upscalers else "None installed (Lanczos)", "")
        for name in upscalers or []:
            self.upscaler.addItem(name, name)
        self.upscaler.setCurrentIndex(max(self.upscaler.findData(settings.upscaler), 0))
        self.upscaler.setToolTip("What Upscale and hires fix enlarge with; add one with "
                                 "Models › Import model…")
        self.tiny_previews = QCheckBox("Live previews with the tiny VAE when one fits the "
                                       "model")
        self.tiny_previews.setChecked(settings.tiny_vae_previews)
        self.tiny_previews.setToolTip("A tiny VAE (TAESD, TAESDXL: Models › Import model…) "
                                      "shows each step as a real picture, at a fraction of a "
                                      "second per step on a CPU")
        self.fast_decode = QCheckBox("Fast decode: finish pictures with the tiny VAE")
        self.fast_decode.setChecked(settings.fast_decode)
        self.fast_decode.setToolTip("Several times faster on a CPU but a little softer; each "
                                    "picture's settings say which VAE decoded it")
        self.keep_downloads = QCheckBox("Keep downloaded model files after import")
        self.keep_downloads.setChecked(settings.keep_downloads)
        self.keep_downloads.setToolTip("Models › Get models… imports a download into Easel's "
                                       "own copy; kept files stay in the data folder's "
                                       "downloads folder")
        self.model_folders = QListWidget()
        self.model_folders.addItems(list(settings.model_folders))
        self.model_folders.setMaximumHeight(80)
        self.model_folders.setToolTip("Other apps' model folders (ComfyUI, AUTOMATIC1111, "
                                      "InvokeAI): the model picker offers their checkpoints "
                                      "and imports one when you choose it; the files are "
                                      "only read")
        add_folder = QPushButton("Add…")
        add_folder.clicked.connect(self._add_model_folder)
        self.remove_folder = QPushButton("Remove")
        self.remove_folder.clicked.connect(
            lambda: self.model_folders.takeItem(self.model_folders.currentRow()))
        folder_buttons = QHBoxLayout()
        folder_buttons.addWidget(add_folder)
        folder_buttons.addWidget(self.remove_folder)
        folder_buttons.addStretch(1)
        self.responsible = ResponsibleSettings(settings, open_word_list)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QFormLayout(self)
        layout.addRow("Run on", self.providers)
        layout.addRow("On a GPU", self.precision)
        layout.addRow("Data folder", folder_row)
        layout.addRow("", self.location)
        layout.addRow("", self.metadata)
        layout.addRow("Theme", self.theme)
        layout.addRow("Models kept loaded", self.kept)
        layout.addRow("CPU threads", self.threads)
        layout.addRow("Upscaler", self.upscaler)
        layout.addRow("", self.keep_downloads)
        layout.addRow("Tiny VAE", self.tiny_previews)
        layout.addRow("", self.fast_decode)
        layout.addRow("Model folders", self.model_folders)
        layout.addRow("", folder_buttons)
        layout.addRow(self.responsible)
        layout.addRow(buttons)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def _add_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder of models")
        if folder and not self.model_folders.findItems(folder, Qt.MatchFlag.MatchExactly):
            self.model_folders.addItem(folder)

    def chosen(self) -> Settings:
        return with_changes(
            self._settings, providers=tuple(self.providers.currentData()),
            data_folder=self.folder.text().strip() or None,
            embed_metadata=self.metadata.isChecked(), theme=self.theme.currentData(),
            models_kept_loaded=self.kept.value(), cpu_threads=self.threads.value(),
            gpu_precision=self.precision.currentData(),
            upscaler=self.upscaler.currentData(), keep_downloads=self.keep_downloads.isChecked(),
            tiny_vae_previews=self.tiny_previews.isChecked(),
            fast_decode=self.fast_decode.isChecked(),
            model_folders=tuple(self.model_folders.item(row).text()
                                for row in range(self.model_folders.count())),
            **self.responsible.chosen())
