"""A set of LoRAs on one model: checked up front, merged only when a session is created.

Merging is ``W + Σ weight × alpha / rank × (up @ down)`` on each weight a LoRA layer names,
done in numpy on the graph's own initializer (transposed back where the exporter folded a
Linear into MatMul's layout). The merged tensors replace the graph's initializers when
onnxruntime creates the session (engine.runtime.InitializerOverrides): nothing is
re-exported, and onnxruntime's graph optimisations see the merged values as if exported.
Everything a user can get wrong (a missing file, a LoRA of another family, layers that match
no weight) is said in one sentence by ``prepare_loras``, before any weight is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import BadRequest, ModelError
from engine.export.safetensors_check import TensorInfo, check_safetensors
from engine.lora.family import family_name, lora_family
from engine.lora.lora_file import LoraLayer, layer_names, read_lora
from engine.lora.targets import ModelTargets, Target
from engine.runtime.onnx_weights import read_initializers
from engine.runtime.sessions import InitializerOverrides

LORA_FILE = "lora.safetensors"  # the tensors of an installed LoRA, in its folder


@dataclass(frozen=True)
class _Lora:
    path: Path
    weight: float
    identity: tuple  # path, size and time: an edited file is a new LoRA
    targets: dict[str, Target]  # layer -> the weight it changes


class LoraSet:
    """LoRAs checked against one model; ``overrides`` gives what each graph needs."""

    def __init__(self, folder: Path, loras: list[_Lora]) -> None:
        self.folder = folder
        self._loras = loras

    def overrides(self, component: str) -> InitializerOverrides | None:
        """The merged initializers of ``component``'s graph, or None when no LoRA changes it."""
        touching = [lora for lora in self._loras
                    if any(t.component == component for t in lora.targets.values())]
        if not touching:
            return None
        key = (component, tuple((lora.identity, lora.weight) for lora in touching))
        return InitializerOverrides(key, lambda: self._merge(component, touching))

    def _merge(self, component: str, loras: list[_Lora]
               ) -> tuple[dict[str, np.ndarray], frozenset[str]]:
        changes: dict[str, list[tuple[Target, LoraLayer, float]]] = {}
        for lora in loras:
            layers = read_lora(lora.path)
            for layer, target in lora.targets.items():
                if target.component == component:
                    changes.setdefault(target.initializer, []).append(
                        (target, layers[layer], lora.weight))
        graph = self.folder / component / "model.onnx"
        merged, external = read_initializers(graph, changes)
        for initializer, parts in changes.items():
            base = merged[initializer]
            total = np.zeros(parts[0][0].shape, dtype=np.float32)
            for target, layer, weight in parts:
                total += layer_delta(layer, target.shape) * np.float32(weight * layer.scale)
            if parts[0][0].transposed:
                total = total.T
            merged[initializer] = (base.astype(np.float32) + total).astype(base.dtype)
        return merged, external


def layer_delta(layer: LoraLayer, shape: tuple[int, ...]) -> np.ndarray:
    """``up @ down`` in the target weight's PyTorch ``shape`` (Linear, or a 1x1 / kxk
    convolution: LoCon's kernel lives in ``down``, ``up`` is 1x1)."""
    up = layer.up.reshape(layer.up.shape[0], -1)
    down = layer.down.reshape(layer.down.shape[0], -1)
    return (up @ down).reshape(shape)


def prepare_loras(folder: Path, family: str, model_name: str,
                  loras: Sequence[tuple[Path | str, float]]) -> LoraSet | None:
    """Check ``loras`` (file, weight) against the model in ``folder``; None when none has a
    weight other than 0 (the model as it is, exactly)."""
    active = [(Path(path), float(weight)) for path, weight in loras if float(weight) != 0.0]
    headers = [(path, weight, _header(path)) for path, weight in active]
    for path, _weight, (layers, tensors) in headers:
        found = lora_family(layers, tensors)
        if found is not None and found != family:
            raise BadRequest(f"LoRA '{lora_name(path)}' is made for {family_name(found)}, but "
                             f"model '{model_name}' is {family_name(family)}.")
    if not headers:
        return None
    model = ModelTargets(folder, model_name)
    checked = []
    for path, weight, (layers, tensors) in headers:
        targets, unmatched = {}, []
        for layer, roles in layers.items():
            target = model.find(layer)
            if target is None or not _fits(tensors, roles, target.shape):
                unmatched.append(layer)
            else:
                targets[layer] = target
        if unmatched:
            raise BadRequest(f"{len(unmatched)} of the {len(layers)} layers of LoRA "
                             f"'{lora_name(path)}' match no weight of model '{model_name}' "
                             f"(the first: '{unmatched[0]}'), so it cannot be applied.")
        stat = path.stat()
        identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        checked.append(_Lora(path, weight, identity, targets))
    return LoraSet(Path(folder), checked)


def lora_name(path: Path) -> str:
    """How the user knows the LoRA: its folder's name when installed, else the file's."""
    path = Path(path)
    return path.parent.name if path.name == LORA_FILE else path.stem


def _header(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, TensorInfo]]:
    if not path.is_file():
        raise ModelError(f"The LoRA file {path} is missing.")
    tensors = check_safetensors(path)
    return layer_names(tensors, lora_name(path)), tensors


def _fits(tensors: dict[str, TensorInfo], roles: dict[str, str],
          shape: tuple[int, ...]) -> bool:
    down, up = tensors[roles["down"]].shape, tensors[roles["up"]].shape
    if len(down) not in (2, 4) or len(up) != len(down) or up[1] != down[0] or (
            len(up) == 4 and tuple(up[2:]) != (1, 1)):
        return False
    kernel = tuple(down[2:]) or (1, 1)
    wanted = tuple(shape[2:]) or (1, 1)
    return (up[0], down[1]) == tuple(shape[:2]) and kernel == wanted
