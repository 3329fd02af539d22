"""The main window: prompt panel and history on the left, the canvas (or the welcome page)
in the middle with the editing and mask tools above it, the gallery on the right, the job
queue below, the device in the status line."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, Qt, QUrl
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from desktop.app.viewmodels.mask import MAX_BRUSH, MIN_BRUSH
from desktop.app.viewmodels.studio import Studio
from desktop.app.widgets.background_actions import BackgroundActions
from desktop.app.widgets.batch_dialogs import BatchActions
from desktop.app.widgets.canvas import Canvas
from desktop.app.widgets.controls_panel import ControlsPanel
from desktop.app.widgets.export_actions import ExportActions
from desktop.app.widgets.gallery_view import GalleryView
from desktop.app.widgets.get_models_dialog import GetModelsDialog
from desktop.app.widgets.history_panel import HistoryPanel
from desktop.app.widgets.icons import icon
from desktop.app.widgets.image_prompts_panel import ImagePromptsPanel
from desktop.app.widgets.models_dialog import ModelsDialog, import_model
from desktop.app.widgets.outpaint_dialog import OutpaintDialog
from desktop.app.widgets.outpaint_handles import OutpaintOverlay
from desktop.app.widgets.picture_details import PictureDetailsDialog
from desktop.app.widgets.prompt_panel import PromptPanel
from desktop.app.widgets.queue_panel import QueuePanel
from desktop.app.widgets.region_tool import RegionOverlay, RegionPanel
from desktop.app.widgets.settings_dialog import SettingsDialog
from desktop.app.widgets.upscale_instruct import UpscaleInstructActions
from desktop.app.widgets.variations_menu import VariationsMenu
from desktop.app.widgets.welcome import WelcomePage

# At the default 1280 × 800 the canvas gets what the prompt panel and two columns of
# thumbnails leave.
LEFT_WIDTH = 320
GALLERY_WIDTH = 2 * 166 + 24  # two 160 px thumbnails with their spacing, and a scroll bar


class MainWindow(QMainWindow):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.setWindowTitle("Easel")
        self.setWindowIcon(icon("easel"))
        self.resize(1280, 800)
        self.prompt_panel = PromptPanel(studio.prompt)
        self.controls_panel = ControlsPanel(studio.controls)  # ControlNets, below the form
        self.image_prompts_panel = ImagePromptsPanel(studio.image_prompts)  # below those
        self.history_panel = HistoryPanel(studio.history, studio.prompt)
        self.canvas = Canvas()
        self.canvas.set_mask(studio.mask)
        self.region_overlay = RegionOverlay(studio.regions, self.canvas)
        self.region_panel = RegionPanel(studio.regions)
        self.outpaint_overlay = OutpaintOverlay(studio.outpaint_frame, self.canvas)
        self.source_label = QLabel()
        self.brush_size = QSpinBox()
        self.welcome = WelcomePage()
        self.gallery = GalleryView(studio)
        self.queue = QueuePanel(studio)
        self.device_label = QLabel()
        self.zoom_label = QLabel("100 %")
        self.last_problem: str | None = None  # the last sentence shown in a dialog (tests)
        self.get_models_dialog: GetModelsDialog | None = None
        self.details_dialog: PictureDetailsDialog | None = None
        self._build()
        self._actions()
        self._connect()
        self._show_device()
        self._show_page()
        if studio.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(studio.settings.window_geometry.encode()))

    # Building ------------------------------------------------------------------------------

    def _build(self) -> None:
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.prompt_panel)
        left.addWidget(self.history_panel)
        left.setStretchFactor(0, 0)  # the form at its size; the history gets the rest
        left.setStretchFactor(1, 1)
        # One row across the whole window: the actions on the source, the canvas modes and
        # the view fit in it at 1280 px (above the ~540 px canvas they needed two rows and
        # still overflowed behind "»"), and the canvas keeps that height. The mask's own tools
        # show above the canvas only while the mask tool is on.
        self.edit_tools = QToolBar("Tools")
        self.edit_tools.setObjectName("Tools")
        self.edit_tools.setMovable(False)
        self.edit_tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.edit_tools)
        self.mask_tools = QToolBar("Mask")
        self.mask_tools.setVisible(False)  # only while the mask tool is on
        canvas_holder = QWidget()
        canvas_layout = QVBoxLayout(canvas_holder)
        canvas_layout.setContentsMargins(0, 0, 0, 0)
        canvas_layout.setSpacing(0)
        canvas_layout.addWidget(self.mask_tools)
        canvas_layout.addWidget(self.canvas, 1)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(canvas_holder)
        centre = QSplitter(Qt.Orientation.Horizontal)
        centre.addWidget(left)
        centre.addWidget(self.pages)
        centre.setStretchFactor(1, 1)
        centre.setSizes([LEFT_WIDTH, 900])
        holder = QWidget()
        layout = QHBoxLayout(holder)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(centre)
        self.setCentralWidget(holder)
        self.gallery_dock = self._dock("Gallery", self.gallery,
                                       Qt.DockWidgetArea.RightDockWidgetArea)
        self.queue_dock = self._dock("Queue", self.queue, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.regions_dock = self._dock("Regions", self.region_panel,
                                       Qt.DockWidgetArea.RightDockWidgetArea)
        self.regions_dock.setVisible(False)  # only while the Region tool is on
        # ControlNets below the gallery: the left column has no room left at 800 px.
        self.controls_dock = self._dock("Controls", _stacked(
            self.controls_panel, self.image_prompts_panel), Qt.DockWidgetArea.RightDockWidgetArea)
        # Hidden until used (View › Controls, or a control or reference picture added): a
        # first picture needs the gallery's room more than an empty panel.
        self.controls_dock.setVisible(False)
        self.studio.controls.changed.connect(self._fit_controls)
        self.studio.controls.editing_changed.connect(self._fit_controls)  # Use and Cancel
        self.studio.image_prompts.changed.connect(self._fit_controls)
        self.resizeDocks([self.gallery_dock], [GALLERY_WIDTH], Qt.Orientation.Horizontal)
        self.statusBar().addPermanentWidget(self.source_label)
        self.statusBar().addPermanentWidget(self.zoom_label)
        self.statusBar().addPermanentWidget(self.device_label)

    def _fit_controls(self) -> None:
        """Room in the Controls dock for every control and the image prompts, shown once
        there is one."""
        if self.studio.controls.rows or self.studio.image_prompts.references:
            self.controls_dock.setVisible(True)
        title = self.controls_dock.fontMetrics().height() + 8  # the dock's own title bar
        height = (self.controls_panel.wanted_height() + self.image_prompts_panel.sizeHint().height()
                  + title)
        self.resizeDocks([self.controls_dock], [height], Qt.Orientation.Vertical)

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, text: str, handler, keys: str | QKeySequence.StandardKey | None = None,  # noqa: ANN001
                icon_name: str | None = None, tip: str | None = None) -> QAction:
        action = QAction(text, self)
        if icon_name:
            action.setIcon(icon(icon_name))
        if keys is not None:
            action.setShortcut(QKeySequence(keys))
        shortcut = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        action.setToolTip(f"{tip or text} ({shortcut})" if shortcut else (tip or text))
        action.triggered.connect(handler)
        self.addAction(action)  # shortcuts work whichever panel has the focus
        return action

    def _actions(self) -> None:
        studio = self.studio
        self.generate_action = self._action("Generate", studio.generate, "Ctrl+Return",
                                            "generate", "Make a picture from the prompt")
        self.cancel_action = self._action("Cancel", studio.cancel_running, "Escape", "cancel",
                                          "Stop the running job")
        import_action = self._action("Import model…", self._import_model, "Ctrl+I", "import")
        models_action = self._action("Manage models…", self._manage_models, None, "models")
        get_action = self._action("Get models…", self._get_models, None, "import",
                                  "Download a model from Easel's catalogue and import it")
        self.prompt_panel.resources.offer([get_action, import_action])  # when nothing fits
        self.controls_panel.offer([get_action, import_action])
        self.image_prompts_panel.offer([get_action, import_action])
        settings_action = self._action("Settings…", self._settings,
                                       QKeySequence.StandardKey.Preferences, "settings")
        quit_action = self._action("Quit", self.close, QKeySequence.StandardKey.Quit)
        undo_action = self._action("Undo", studio.undo, QKeySequence.StandardKey.Undo, "undo",
                                   "Undo the last mask stroke while painting a mask, else "
                                   "bring back the pictures just moved to the trash")
        reuse_action = self._action("Reuse parameters", self.gallery.reuse_selected, None,
                                    "reuse", "Fill the prompt panel from the selected picture")
        seed_action = self._action("Reuse seed", lambda: self.gallery.reuse_selected(True),
                                   None, "seed", "Use the selected picture's seed")
        details_action = self._action(
            "Picture details…", self.show_picture_details, "Alt+Return", "details",
            "What the selected picture was made with, and what its Content Credentials say")
        fit = self._action("Fit", self.canvas.fit, "Ctrl+0", "fit", "Fit the picture in view")
        actual = self._action("100 %", self.canvas.actual_size, "Ctrl+1", "zoom-actual",
                              "Show the picture pixel for pixel")
        zoom_in = self._action("Zoom in", lambda: self.canvas.zoom_by(1.25),
                               QKeySequence.StandardKey.ZoomIn, "zoom-in")
        zoom_out = self._action("Zoom out", lambda: self.canvas.zoom_by(0.8),
                                QKeySequence.StandardKey.ZoomOut, "zoom-out")
        focus_prompt = self._action("Go to prompt", self.prompt_panel.prompt.setFocus, "Ctrl+L")
        focus_gallery = self._action("Search gallery", self.gallery.search.setFocus, "Ctrl+F")
        editing = self._editing_actions()
        self.exports = ExportActions(studio, self, self.gallery.selected)
        self.gallery.exports = self.exports
        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        for action in (*self.exports.file_actions(), import_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        self.batches = BatchActions(studio.batches, self)  # Run batch…, Comparison grid…
        for action in self.batches.file_actions():
            file_menu.addAction(action)
        file_menu.addSeparator()
        for action in (settings_action, quit_action):
            file_menu.addAction(action)
        edit_menu = menus.addMenu("&Edit")
        for action in (undo_action, focus_prompt, focus_gallery):
            edit_menu.addAction(action)
        image_menu = menus.addMenu("&Picture")
        for action in (self.generate_action, self.cancel_action):
            image_menu.addAction(action)
        image_menu.addSeparator()
        for action in editing:
            image_menu.addAction(action)
        image_menu.insertMenu(self.edit_action, self.variations_menu)
        image_menu.addSeparator()
        for action in (reuse_action, seed_action, details_action):
            image_menu.addAction(action)
        view_menu = menus.addMenu("&View")
        for action in (fit, actual, zoom_in, zoom_out):
            view_menu.addAction(action)
        view_menu.addSeparator()
        view_menu.addAction(self.gallery_dock.toggleViewAction())
        view_menu.addAction(self.queue_dock.toggleViewAction())
        view_menu.addAction(self.controls_dock.toggleViewAction())
        model_menu = menus.addMenu("&Models")
        model_menu.addAction(get_action)
        model_menu.addAction(import_action)
        model_menu.addAction(models_action)
        spacer = QWidget()  # the view's icons sit at the right end
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.edit_tools.addWidget(spacer)
        for action in (fit, actual, zoom_in, zoom_out):
            self.edit_tools.addAction(action)
            self._icon_only(self.edit_tools, action)

    def _editing_actions(self) -> list[QAction]:
        """Actions on the source picture (menu and toolbar) and the mask tool's own."""
        studio = self.studio
        self.use_source_action = self._action(
            "Use as source", lambda: studio.use_as_source(), None, "source",
            "Make the picture on the canvas the source for the editing actions")
        self.variations_action = self._action(
            "Variations", studio.variations, "Ctrl+Shift+V", "variations",
            "New pictures like the source, with its own prompt unless you type a new one; "
            "as many as 'Variations' says")
        self.edit_action = self._action(
            "Edit", studio.edit, "Ctrl+Shift+E", "edit",
            "Redraw the source to match the prompt; Strength says how much")
        self.inpaint_action = self._action(
            "Inpaint", studio.inpaint, "Ctrl+Shift+I", "inpaint",
            "Repaint the masked part of the source; the rest stays exactly as it is")
        self.outpaint_action = self._action(
            "Outpaint…", self._outpaint, "Ctrl+Shift+O", "outpaint",
            "Extend the source past its edges")
        self.mask_action = self._action(
            "Mask tool", studio.set_mask_editing, "Ctrl+M", "mask",
            "Paint the part of the source to repaint")
        self.mask_action.setCheckable(True)
        self.regions_action = self._action(
            "Regions", studio.set_regions_editing, "Ctrl+Shift+R", "regions",
            "Lay out boxes with prompts of their own on the picture to generate; Generate "
            "follows them while this tool is on")
        self.regions_action.setCheckable(True)
        self.outpaint_handles_action = self._action(
            "Outpaint handles", studio.set_outpaint_editing, None, "outpaint-handles",
            "Drag the source's edges on the canvas to set how much Outpaint… adds")
        self.outpaint_handles_action.setCheckable(True)
        mask = studio.mask
        self.brush_action = self._action("Brush", lambda: mask.set_erasing(False), "B", "brush",
                                         "Paint the part to repaint")
        self.eraser_action = self._action("Eraser", lambda: mask.set_erasing(True), "E",
                                          "eraser", "Take part of the mask away")
        group = QActionGroup(self)
        for action in (self.brush_action, self.eraser_action):
            action.setCheckable(True)
            group.addAction(action)
        self.brush_action.setChecked(True)
        self.brush_size.setRange(MIN_BRUSH, MAX_BRUSH)
        self.brush_size.setSuffix(" px")
        self.brush_size.setValue(mask.brush_size)
        self.brush_size.setToolTip("Brush size in picture pixels ([ smaller, ] bigger)")
        self.brush_size.setAccessibleName("Brush size")
        smaller = self._action("Smaller brush", lambda: mask.set_brush_size(
            round(mask.brush_size / 1.25)), "[")
        bigger = self._action("Bigger brush", lambda: mask.set_brush_size(
            max(round(mask.brush_size * 1.25), mask.brush_size + 1)), "]")
        self.undo_stroke_action = self._action("Undo stroke", mask.undo, None, "undo",
                                               "Take back the last change to the mask")
        self.invert_action = self._action("Invert", mask.invert, "Ctrl+Shift+X", "invert",
                                          "Repaint everything but the painted part")
        self.clear_action = self._action("Clear", mask.clear, None, "clear",
                                         "Clear the mask")
        for action in (self.brush_action, self.eraser_action, smaller, bigger):
            # Single keys belong to the canvas, so typing a prompt never switches tools.
            self.removeAction(action)
            self.canvas.addAction(action)
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        for action in (self.use_source_action, self.variations_action, self.edit_action,
                       self.inpaint_action, self.outpaint_action, self.mask_action):
            self.edit_tools.addAction(action)
        self.variations_menu = VariationsMenu(studio.image_prompts, self.variations_action, self)
        self.variations_menu.attach(self.edit_tools)
        self.upscale_instruct = UpscaleInstructActions(studio, self)
        self.upscale_instruct.add_to(self.edit_tools)
        self._with_text(self.edit_tools, self.upscale_instruct.upscale_menu.menuAction())
        self.background = BackgroundActions(studio.background, self)
        self.background.add_to(self.edit_tools)
        self.gallery.background = self.background
        self.edit_tools.addSeparator()
        self.edit_tools.addAction(self.regions_action)
        self.edit_tools.addAction(self.outpaint_handles_action)
        self._icon_only(self.edit_tools, self.outpaint_handles_action)
        for action in (self.brush_action, self.eraser_action):
            self.mask_tools.addAction(action)
            self._with_text(self.mask_tools, action)
        self.mask_tools.addWidget(self.brush_size)
        for action in (self.undo_stroke_action, self.invert_action, self.clear_action):
            self.mask_tools.addAction(action)
        controls = studio.controls  # a control picture on the mask tool: Use it from here too
        self.use_control_action = self._action("Use as control picture", controls.use_edit)
        self.mask_tools.addAction(self.use_control_action)
        self.background.add_to_mask_tools(self.mask_tools)
        self.use_control_action.setVisible(False)
        controls.editing_changed.connect(
            lambda: self.use_control_action.setVisible(controls.edited is not None))
        return [self.use_source_action, self.variations_action, self.edit_action,
                self.inpaint_action, self.outpaint_action, self.mask_action, self.regions_action,
                self.outpaint_handles_action, *self.upscale_instruct.menu_actions(),
                self.background.menu.menuAction()]

    @staticmethod
    def _icon_only(toolbar: QToolBar, action: QAction) -> None:
        toolbar.widgetForAction(action).setToolButtonStyle(
            Qt.ToolButtonStyle.ToolButtonIconOnly)

    @staticmethod
    def _with_text(toolbar: QToolBar, action: QAction) -> None:
        toolbar.widgetForAction(action).setToolButtonStyle(
            Qt.ToolButtonStyle.ToolButtonTextBesideIcon)

    def _connect(self) -> None:
        studio = self.studio
        studio.source_changed.connect(self._show_source)
        studio.mask_editing_changed.connect(self._show_mask_editing)
        studio.regions.editing_changed.connect(self._show_regions_editing)
        studio.regions.changed.connect(self._show_regions_editing)
        studio.outpaint_frame.editing_changed.connect(
            lambda: self.outpaint_handles_action.setChecked(studio.outpaint_frame.editing))
        studio.mask.tool_changed.connect(self._show_mask_tool)
        studio.mask.changed.connect(lambda _area: self._show_mask_tool())
        self.brush_size.valueChanged.connect(studio.mask.set_brush_size)
        self._show_source()
        self._show_mask_tool()
        self.prompt_panel.generate_button.clicked.connect(studio.generate)
        self.prompt_panel.prompt.submitted.connect(studio.generate)
        self.prompt_panel.negative.submitted.connect(studio.generate)
        studio.canvas_changed.connect(self._show_canvas)
        studio.device_changed.connect(self._show_device)
        studio.welcome_changed.connect(self._show_page)
        studio.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        studio.problem.connect(self.show_problem)
        self.canvas.file_dropped.connect(self._dropped)
        self.canvas.data_dropped.connect(self.studio.drops.drop_image_data)
        self.canvas.web_address_dropped.connect(self.studio.drops.drop_web_address)
        self.canvas.zoom_changed.connect(
            lambda zoom: self.zoom_label.setText(f"{zoom * 100:.0f} %"))
        self.welcome.start.connect(studio.dismiss_welcome)
        self.welcome.import_requested.connect(self._import_model)

    # Reacting ------------------------------------------------------------------------------

    def _show_page(self) -> None:
        self.pages.setCurrentIndex(0 if self.studio.show_welcome else 1)
        if not self.studio.show_welcome:
            self.prompt_panel.prompt.setFocus()

    def _show_canvas(self) -> None:
        studio = self.studio
        if studio.canvas_is_preview:
            self.canvas.show_image(studio.canvas_image, studio.preview_size, preview=True)
        else:
            self.canvas.show_image(studio.canvas_image)
        self._show_page()

    def _show_device(self) -> None:
        device = self.studio.device
        text = device.summary if device.reason is None else f"⚠ {device.summary}"
        self.device_label.setText(text)
        self.device_label.setToolTip(device.reason or device.note or "Where pictures are made")
        if device.reason:
            self.statusBar().showMessage(device.reason, 15000)

    def _show_source(self) -> None:
        source = self.studio.source
        self.prompt_panel.show_source_rows(source is not None)
        if source is None:
            self.source_label.setText("No source picture")
            self.source_label.setToolTip("Drop a picture on the canvas, or choose one in the "
                                         "gallery (Use as source)")
        else:
            width, height = source.size
            self.source_label.setText(f"Source: {source.name}  {width} × {height}")
            self.source_label.setToolTip("The picture Variations, Edit, Inpaint and Outpaint "
                                         "start from")

    def _show_mask_editing(self) -> None:
        on = self.studio.mask_editing
        self.mask_action.setChecked(on)
        self.mask_tools.setVisible(on)
        self.canvas.set_mask_editing(on)
        if on:
            self.canvas.setFocus()  # for the single-key tool shortcuts

    def _show_regions_editing(self) -> None:
        regions = self.studio.regions
        self.regions_action.setChecked(regions.editing)
        if regions.editing != self.regions_dock.isVisible():
            self.regions_dock.setVisible(regions.editing)
            if regions.editing:  # room for a few boxes beside the gallery
                self.resizeDocks([self.regions_dock], [340], Qt.Orientation.Vertical)
        # Say on the button itself when Generate follows the layout.
        self.prompt_panel.generate_button.setText(
            "Generate with regions" if regions.in_use else "Generate")

    def _show_mask_tool(self) -> None:
        mask = self.studio.mask
        (self.eraser_action if mask.erasing else self.brush_action).setChecked(True)
        if self.brush_size.value() != mask.brush_size:
            self.brush_size.setValue(mask.brush_size)
        self.undo_stroke_action.setEnabled(mask.can_undo)

    def _outpaint(self) -> None:
        """Ask for the sides (the dialog opens without blocking), then queue the outpaint."""
        studio = self.studio
        if studio.source is None:
            studio.outpaint(studio.outpaint_sides)  # says, in one sentence, what is missing
            return
        model = studio.prompt.model()
        dialog = OutpaintDialog(studio.source.size, studio.outpaint_sides,
                                model.size_multiple if model else 64, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: studio.outpaint(dialog.sides()))
        self.outpaint_dialog = dialog  # for tests
        dialog.open()

    def _dropped(self, path: object) -> None:
        self.studio.drops.drop_file(path)

    def show_problem(self, text: str) -> None:
        """One sentence in a window-modal box that does not block the event loop."""
        self.last_problem = text
        box = QMessageBox(QMessageBox.Icon.Warning, "Easel", text, QMessageBox.StandardButton.Ok,
                          self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _import_model(self) -> None:
        import_model(self.studio, self, folder=False)

    def _manage_models(self) -> None:
        ModelsDialog(self.studio, self).exec()

    def _get_models(self) -> GetModelsDialog:
        """Not modal, so the queue's Cancel stays in reach; one, shown again each time."""
        if self.get_models_dialog is None:
            self.get_models_dialog = GetModelsDialog(self.studio.catalogue, self)
        self.get_models_dialog.show()
        self.get_models_dialog.raise_()
        return self.get_models_dialog

    def _settings(self) -> None:
        dialog = SettingsDialog(self.studio.settings, self.studio.upscaler_names(), self,
                                self.studio.library.root, self._open_word_list)
        if dialog.exec():
            self.studio.apply_settings(dialog.chosen())

    def show_picture_details(self) -> None:
        selected = self.gallery.selected()
        if not selected:
            self.show_problem("Select a picture in the gallery to see its details.")
            return
        if self.details_dialog is None:
            self.details_dialog = PictureDetailsDialog(self.studio.details, self)
        self.details_dialog.expect(selected[0].id)
        self.studio.details.ask(selected[0])
        self.details_dialog.show()
        self.details_dialog.raise_()

    def _open_word_list(self) -> None:
        path = self.studio.checks.word_list()
        if path is not None and not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.show_problem(f"No program opened the word list; edit '{path}' with any text "
                              "editor.")

    def closeEvent(self, event: QCloseEvent) -> None:
        geometry = bytes(self.saveGeometry().toBase64()).decode()
        self.studio.remember_window(geometry)
        self.studio.shutdown()
        super().closeEvent(event)


def _stacked(*panels: QWidget) -> QWidget:
    """One dock's panels, one above the other; the first takes the spare height."""
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    for panel in panels:
        layout.addWidget(panel, 1 if panel is panels[0] else 0)
    return holder
