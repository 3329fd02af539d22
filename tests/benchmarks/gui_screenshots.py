"""Screenshots of the desktop app's main states, taken from a real X window under Xvfb.

    python -m tests.benchmarks.gui_screenshots [--to resources/docs]

Needs Xvfb (Debian: apt-get install xvfb) and Qt's X11 libraries (libxcb-cursor0,
libxkbcommon-x11-0); without a display the script starts itself again under ``xvfb-run``.
It makes a fresh library in a temporary folder and saves, as PNG:

    app-welcome.png     first run: the welcome page
    app-generating.png  a picture being made: live preview, queue and progress
    app-picture.png     the finished picture on the canvas, in the gallery and the history
    app-gallery.png     a gallery of starter-model pictures, one selected, searched
    app-inpaint.png     a gallery picture as the source, a mask painted with the mask tool
    app-regions.png     the Region tool: two boxes with their prompts, the Regions panel
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZE = (1280, 800)
PROMPTS = [
    "a small dog at the top, on a green background",
    "a moon on the left and a tree on the right, on a black background",
    "a rocket at the top and a house at the bottom, on a white background",
    "a big horse in the centre, on a blue background",
    "an astronaut at the bottom, on a pink background",
    "a chair on the left and a sunflower on the right, on a purple background",
    "an avocado on the left, on a blue background",
    "a big dog in the centre, on a yellow background",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", type=Path, default=ROOT / "resources" / "docs")
    arguments = parser.parse_args()
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "xcb":
        if not shutil.which("xvfb-run"):
            sys.exit("gui_screenshots: no display and no xvfb-run (apt-get install xvfb)")
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {SIZE[0] + 40}x{SIZE[1] + 60}x24",
                   sys.executable, "-m", "tests.benchmarks.gui_screenshots",
                   "--to", str(arguments.to)]
        sys.exit(subprocess.call(command, env={**os.environ, "QT_QPA_PLATFORM": "xcb"}))
    with tempfile.TemporaryDirectory(prefix="easel-shots-") as home:
        os.environ["EASEL_HOME"] = home
        os.environ["EASEL_CONFIG"] = str(Path(home) / "config")
        take_screenshots(arguments.to, Path(home))


def take_screenshots(folder: Path, home: Path) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from desktop.app.generation import EnginePipelines
    from desktop.app.viewmodels.studio import Services, Studio
    from desktop.app.widgets.main_window import GALLERY_WIDTH, MainWindow
    from desktop.library import Library
    from desktop.model_store import ModelStore
    from desktop.settings import Settings
    from engine.runtime import RuntimeOptions

    app = QApplication(sys.argv[:1])
    folder.mkdir(parents=True, exist_ok=True)
    library = Library.open(home)
    store = ModelStore(home / "models", ROOT / "resources" / "models")
    pipelines = EnginePipelines(store, RuntimeOptions(providers=("cpu",)))
    studio = Studio(Services(library, store, pipelines, Settings()))
    window = MainWindow(studio)
    window.resize(*SIZE)
    window.move(0, 0)
    window.show()

    def wait(condition, limit_s: float = 60.0) -> None:
        started = time.monotonic()
        while not condition() and time.monotonic() - started < limit_s:
            app.processEvents()
            time.sleep(0.01)
        settle()

    def settle(seconds: float = 0.3) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    def shoot(name: str) -> None:
        settle()
        picture = window.screen().grabWindow(window.winId())
        picture.setDevicePixelRatio(1)
        picture.save(str(folder / name), "PNG")
        print(f"saved {folder / name} ({picture.width()}x{picture.height()})")

    settle(1.0)
    shoot("app-welcome.png")
    studio.dismiss_welcome()

    # Many steps, so the shot catches the live preview part-way.
    studio.prompt.update(prompt=PROMPTS[0], steps=300)
    window.prompt_panel.show_form()
    studio.generate()
    studio.prompt.update(prompt=PROMPTS[1], steps=12)
    studio.generate()  # waits in the queue
    wait(lambda: studio.progress is not None and studio.progress.step > 240)
    shoot("app-generating.png")
    wait(lambda: studio.jobs.rowCount() == 0, 120)
    for prompt in PROMPTS[2:]:
        studio.prompt.update(prompt=prompt, steps=12)
        studio.generate()
    wait(lambda: studio.jobs.rowCount() == 0, 120)
    studio.prompt.update(prompt=PROMPTS[1])
    window.prompt_panel.show_form()
    studio.show_entry(studio.gallery.entry(len(PROMPTS) - 2))
    wait(lambda: len(studio.gallery._thumbnails) >= len(PROMPTS))
    shoot("app-picture.png")

    grid = window.gallery.grid
    window.resizeDocks([window.gallery_dock], [760], Qt.Orientation.Horizontal)
    grid.setCurrentIndex(grid.model().index(2))
    studio.show_entry(studio.gallery.entry(2))
    settle(0.5)
    shoot("app-gallery.png")

    # The moon-and-tree picture as the source; the tree painted over, to become a sunflower.
    window.resizeDocks([window.gallery_dock], [GALLERY_WIDTH], Qt.Orientation.Horizontal)
    grid.clearSelection()
    studio.use_as_source(studio.gallery.entry(len(PROMPTS) - 2))
    wait(lambda: studio.source is not None)
    studio.prompt.update(prompt="a moon on the left and a sunflower on the right, "
                                "on a black background")
    window.prompt_panel.show_form()
    window.mask_action.trigger()
    settle()
    mask, canvas = studio.mask, window.canvas
    mask.set_brush_size(44)
    mask.begin_stroke(QPointF(175, 70))
    for x, y in ((215, 80), (200, 130), (165, 150), (205, 190), (180, 215)):
        mask.extend_stroke(QPointF(x, y))
    mask.end_stroke()
    rect = canvas.image_rect()
    QTest.mouseMove(canvas, QPoint(round(rect.x() + 120 * canvas.zoom),
                                   round(rect.y() + 200 * canvas.zoom)))
    shoot("app-inpaint.png")

    # The Region tool over the starter model's 256 px frame: a moon top left, a house below.
    window.mask_action.trigger()  # off again
    window.regions_action.trigger()
    regions = studio.regions
    studio.prompt.update(prompt="a night scene, on a black background")
    window.prompt_panel.show_form()
    regions.add(16, 16, 96, 96, "a moon")
    regions.add(128, 128, 112, 112, "a house")
    regions.select(1)
    shoot("app-regions.png")
    window.close()
    library.close()


if __name__ == "__main__":
    main()
