"""The Region tool's layout: boxes on the picture, each with a prompt of its own, beside the
prompt panel's global prompt ("a moon" top left, "a horse" bottom right).

Boxes are kept in pixels of the picture to be generated, at the size chosen in the prompt
panel, so zooming or panning the canvas changes nothing and a new size scales them with it.
The gestures (draw, move, resize) live here too, in picture pixels: the canvas only turns
mouse positions into picture points, so tests drive the tool with or without a mouse.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, Signal

from desktop.app.parameters import Form, batch_seed
from desktop.app.viewmodels.prompt import PromptViewModel
from engine.pipelines.regions import MAX_REGION_WEIGHT, MAX_REGIONS
from engine.request import Region, RegionsRequest

MAX_BOXES = MAX_REGIONS  # each box costs one more UNet pass per step
# Two cells of the model's latent grid (8 pixels for Stable Diffusion, 16 for the starter
# model): a box this wide covers one whole cell wherever it sits, so its prompt always shows
# (the engine warns about a box that covers none).
CELLS_PER_MIN_SIDE = 2
MIN_SIDE = CELLS_PER_MIN_SIDE * 8  # until a model is known
DEFAULT_WEIGHT = RegionsRequest.region_weight
MIN_WEIGHT, MAX_WEIGHT = 0.1, MAX_REGION_WEIGHT
TOO_MANY = (f"A picture can have at most {MAX_BOXES} boxes; delete one (select it and press "
            f"Delete) to draw another.")

# A handle says which edges a resize moves: -1 the left (or top) edge, 1 the right (or
# bottom), 0 neither; (0, 0) is the inside, which moves the whole box.
Handle = tuple[int, int]
INSIDE: Handle = (0, 0)


@dataclass(frozen=True)
class Box:
    """A box in picture pixels: it covers x ≤ column < x + width (and rows likewise)."""

    x: int
    y: int
    width: int
    height: int
    prompt: str = ""

    @property
    def rect(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height


@dataclass
class _Drag:
    handle: Handle | None  # None: drawing a new box
    index: int | None  # the box dragged (or drawn, once it exists)
    start: tuple[float, float]  # where the button went down, in picture pixels
    box: Box | None  # the box as it was when the drag began
    reach: float  # the click-versus-drag distance, in picture pixels


class RegionsModel(QObject):
    changed = Signal()  # a box was added, removed, moved, resized or given a prompt
    selection_changed = Signal()
    size_changed = Signal()  # the picture's size (the boxes were scaled with it)
    editing_changed = Signal()  # the tool was turned on or off
    drawn = Signal(int)  # a new box, ready for its prompt
    refused = Signal(str)  # one sentence: why a box was not drawn

    def __init__(self, width: int = 512, height: int = 512,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = (width, height)
        self.boxes: list[Box] = []
        self.selected: int | None = None
        self.weight = DEFAULT_WEIGHT
        self.editing = False
        self.min_side = MIN_SIDE
        self._drag: _Drag | None = None

    def follow(self, prompt: PromptViewModel) -> None:
        """Keep the layout at the size chosen in the prompt panel, its smallest box fit
        for the chosen model."""
        def resize() -> None:
            model = prompt.model()
            if model is not None:
                self.min_side = CELLS_PER_MIN_SIDE * model.description.vae_scale_factor
            self.set_size(prompt.form.width, prompt.form.height)

        prompt.form_changed.connect(resize)
        prompt.size_changed.connect(resize)
        resize()

    # The tool and the picture --------------------------------------------------------------

    def set_editing(self, on: bool) -> None:
        if on != self.editing:
            self.editing = on
            self._drag = None
            self.editing_changed.emit()

    @property
    def in_use(self) -> bool:
        """Whether Generate lays out the picture: the tool is on and has boxes."""
        return self.editing and bool(self.boxes)

    def set_size(self, width: int, height: int) -> None:
        """A new picture size: every box keeps its place and share of the picture."""
        if (width, height) == self.size or width <= 0 or height <= 0:
            return
        old_width, old_height = self.size
        self.size = (width, height)

        def scaled(box: Box) -> Box:
            left, right = round(box.x * width / old_width), round(
                (box.x + box.width) * width / old_width)
            top, bottom = round(box.y * height / old_height), round(
                (box.y + box.height) * height / old_height)
            return self._fitted(replace(box, x=left, y=top, width=right - left,
                                        height=bottom - top))

        self.boxes = [scaled(box) for box in self.boxes]
        self._drag = None
        self.size_changed.emit()
        self.changed.emit()

    # The boxes -----------------------------------------------------------------------------

    def add(self, x: int, y: int, width: int, height: int, prompt: str = "") -> int | None:
        """A new box (fitted inside the picture, at least ``min_side``); None when there are
        already MAX_BOXES (refused, in one sentence)."""
        if len(self.boxes) >= MAX_BOXES:
            self.refused.emit(TOO_MANY)
            return None
        self.boxes.append(self._fitted(Box(int(x), int(y), int(width), int(height), prompt)))
        self.changed.emit()
        self.select(len(self.boxes) - 1)
        return len(self.boxes) - 1

    def set_box(self, index: int, x: int, y: int, width: int, height: int) -> None:
        box = self.boxes[index]
        self._replace(index, self._fitted(replace(box, x=int(x), y=int(y), width=int(width),
                                                  height=int(height))))

    def set_prompt(self, index: int, prompt: str) -> None:
        self._replace(index, replace(self.boxes[index], prompt=prompt))

    def remove(self, index: int) -> None:
        if not 0 <= index < len(self.boxes):
            return
        del self.boxes[index]
        self._drag = None
        if self.selected is not None and self.selected >= index:
            # The selection follows its box down; a removed selection goes.
            self.select(None if self.selected == index else self.selected - 1)
        self.changed.emit()

    def remove_selected(self) -> None:
        if self.selected is not None:
            self.remove(self.selected)

    def clear(self) -> None:
        if self.boxes:
            self.boxes = []
            self._drag = None
            self.select(None)
            self.changed.emit()

    def select(self, index: int | None) -> None:
        if index is not None and not 0 <= index < len(self.boxes):
            index = None
        if index != self.selected:
            self.selected = index
            self.selection_changed.emit()

    def set_weight(self, weight: float) -> None:
        weight = min(max(float(weight), MIN_WEIGHT), MAX_WEIGHT)
        if weight != self.weight:
            self.weight = weight
            self.changed.emit()

    def _replace(self, index: int, box: Box) -> None:
        if box != self.boxes[index]:
            self.boxes[index] = box
            self.changed.emit()

    def _fitted(self, box: Box) -> Box:
        """The box inside the picture and at least ``min_side`` on each side (as big as
        the picture at most), keeping its top-left corner where it can."""
        picture_width, picture_height = self.size
        width = min(max(box.width, self.min_side), picture_width)
        height = min(max(box.height, self.min_side), picture_height)
        return replace(box, x=min(max(box.x, 0), picture_width - width),
                       y=min(max(box.y, 0), picture_height - height),
                       width=width, height=height)

    def reuse(self, parameters: dict) -> bool:
        """The boxes a library picture was made with ("Reuse parameters"), in place of these;
        False, changing nothing, when it has none (or none this model could read)."""
        boxes = []
        for region in parameters.get("regions") or []:
            box = region.get("box") if isinstance(region, dict) else None
            prompt = region.get("prompt") if isinstance(region, dict) else None
            if (isinstance(box, list) and len(box) == 4 and isinstance(prompt, str)
                    and all(isinstance(value, int) for value in box)):
                boxes.append(self._fitted(Box(*box, prompt)))
        if not boxes:
            return False
        self.boxes = boxes[:MAX_BOXES]
        weight = parameters.get("region_weight")
        if isinstance(weight, int | float) and not isinstance(weight, bool):
            self.weight = min(max(float(weight), MIN_WEIGHT), MAX_WEIGHT)
        self._drag = None
        self.select(None)
        self.changed.emit()
        return True

    # What Generate uses --------------------------------------------------------------------

    def regions(self) -> tuple[Region, ...]:
        return tuple((box.rect, box.prompt.strip()) for box in self.boxes)

    def missing_prompt(self) -> str | None:
        """A sentence naming the first box with no prompt, or None when all have one."""
        for number, box in enumerate(self.boxes, start=1):
            if not box.prompt.strip():
                return (f"Box {number} has no prompt: type what it should show in the "
                        f"Regions panel, or delete it.")
        return None

    # Gestures, in picture pixels ------------------------------------------------------------

    def hit(self, x: float, y: float, reach: float) -> tuple[int, Handle] | None:
        """The box under a point and the handle there: an edge or corner within ``reach``
        pixels, else the inside. The selected box comes first, then the topmost (the
        last drawn)."""
        order = list(reversed(range(len(self.boxes))))
        if self.selected is not None:
            order.remove(self.selected)
            order.insert(0, self.selected)
        for index in order:
            handle = _handle_at(self.boxes[index], x, y, reach)
            if handle is not None:
                return index, handle
        return None

    def begin_drag(self, x: float, y: float, reach: float = 4.0) -> None:
        """The button went down at (x, y): grab the box (or its edge) there, or start
        drawing a new one (refused when there are MAX_BOXES already)."""
        found = self.hit(x, y, reach)
        if found is not None:
            index, handle = found
            self.select(index)
            self._drag = _Drag(handle, index, (x, y), self.boxes[index], reach)
            return
        self.select(None)
        if len(self.boxes) >= MAX_BOXES:
            self.refused.emit(TOO_MANY)
            return
        self._drag = _Drag(None, None, (x, y), None, reach)

    def drag_to(self, x: float, y: float) -> None:
        drag = self._drag
        if drag is None:
            return
        dx, dy = x - drag.start[0], y - drag.start[1]
        if drag.handle is None:
            self._draw(drag, x, y)
        elif drag.handle == INSIDE:
            box = drag.box
            self.set_box(drag.index, box.x + round(dx), box.y + round(dy), box.width,
                         box.height)
        else:
            self._resize(drag, round(dx), round(dy))

    def end_drag(self) -> None:
        drag, self._drag = self._drag, None
        if drag is not None and drag.handle is None and drag.index is not None:
            self.drawn.emit(drag.index)

    @property
    def dragging(self) -> bool:
        return self._drag is not None

    def _draw(self, drag: _Drag, x: float, y: float) -> None:
        start_x, start_y = drag.start
        if drag.index is None:
            if max(abs(x - start_x), abs(y - start_y)) < drag.reach:
                return  # a click, not yet a drag: it only cleared the selection
            drag.index = self.add(0, 0, self.min_side, self.min_side)
            if drag.index is None:
                return
        left, width = _drawn_span(start_x, x, self.min_side, self.size[0])
        top, height = _drawn_span(start_y, y, self.min_side, self.size[1])
        self.set_box(drag.index, left, top, width, height)

    def _resize(self, drag: _Drag, dx: int, dy: int) -> None:
        box, (moves_x, moves_y) = drag.box, drag.handle
        left, width = _moved_edge(box.x, box.width, moves_x, dx, self.min_side, self.size[0])
        top, height = _moved_edge(box.y, box.height, moves_y, dy, self.min_side, self.size[1])
        self.set_box(drag.index, left, top, width, height)


def _handle_at(box: Box, x: float, y: float, reach: float) -> Handle | None:
    # On a small box (or zoomed far out) the edges' reach shrinks, so its middle still moves it.
    reach_x, reach_y = min(reach, box.width / 4), min(reach, box.height / 4)
    right, bottom = box.x + box.width, box.y + box.height
    if not (box.x - reach_x <= x <= right + reach_x and box.y - reach_y <= y <= bottom + reach_y):
        return None
    return (_edge(x, box.x, right, reach_x), _edge(y, box.y, bottom, reach_y))


def _edge(value: float, start: float, end: float, reach: float) -> int:
    if abs(value - start) <= reach:
        return -1
    return 1 if abs(value - end) <= reach else 0


def _drawn_span(anchor: float, pointer: float, minimum: int, limit: int) -> tuple[int, int]:
    """(start, length) of a box drawn from ``anchor`` to ``pointer``: at least ``minimum``,
    growing the way the pointer went, inside 0..limit."""
    anchor, pointer = min(max(anchor, 0), limit), min(max(pointer, 0), limit)
    start, end = round(min(anchor, pointer)), round(max(anchor, pointer))
    if end - start < minimum:
        if pointer >= anchor:
            end = start + minimum
        else:
            start = end - minimum
    if start < 0:
        start, end = 0, end - start
    if end > limit:
        start, end = start - (end - limit), limit
    return start, end - start


def _moved_edge(start: int, length: int, moves: int, delta: int, minimum: int,
                limit: int) -> tuple[int, int]:
    """(start, length) after dragging one edge by ``delta``: the other edge stays put, the
    box keeps ``minimum`` and stays inside 0..limit."""
    end = start + length
    if moves < 0:
        start = min(max(start + delta, 0), end - minimum)
    elif moves > 0:
        end = max(min(end + delta, limit), start + minimum)
    return start, end - start


def regions_request(form: Form, layout: RegionsModel) -> RegionsRequest:
    """The form's settings with the layout's boxes, at the layout's size (which follows the
    form's), so the boxes always lie inside the picture they were drawn on."""
    width, height = layout.size
    return RegionsRequest(
        prompt=form.prompt, regions=layout.regions(), negative_prompt=form.negative_prompt,
        width=width, height=height, region_weight=layout.weight, steps=form.steps,
        guidance=form.guidance, scheduler=form.scheduler, seed=batch_seed(form),
        count=form.count, generator=form.generator, emphasis=form.emphasis)
