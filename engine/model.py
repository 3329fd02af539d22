"""A loaded model folder: its description, tokenizer and lazily created ONNX sessions."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.description import ModelDescription
from engine.errors import ModelError
from engine.manifest import manifest_hash, verify_manifest
from engine.placement import Placement, load_placement
from engine.runtime import (
    CancelToken,
    Graph,
    InitializerOverrides,
    Preparation,
    RuntimeOptions,
    Session,
    get_session,
    prepare_graphs,
    release_sessions,
)
from engine.runtime.prepare import PrepareProgress
from engine.tokenizer import PromptTokenizer

if TYPE_CHECKING:
    from engine.embeddings import EmbeddingSet
    from engine.tiny_vae import TinyVae

REQUIRED_GRAPHS = ("text_encoder", "unet", "vae_decoder")
# The graphs that run in fp16 where the runtime calls for it (a GPU provider): the VAE
# decoder too, with a float32 fallback when fp16 overflows (``Model.decode``); the VAE
# encoder stays float32.
HALF_GRAPHS = frozenset({"unet", "text_encoder", "text_encoder_2", "vae_decoder"})

log = logging.getLogger(__name__)


class Model:
    """An installed model. Cheap to create: sessions are made on first use and cached."""

    def __init__(self, folder: Path, description: ModelDescription, runtime: RuntimeOptions,
                 name: str) -> None:
        self.folder = folder
        self.description = description
        self.runtime = runtime
        self.name = name
        self.hash = manifest_hash(folder)
        self._loras = None  # engine.lora.apply.LoraSet: the LoRAs the sessions carry
        self._embeddings = None  # engine.embeddings.EmbeddingSet: extra token-table rows
        # The tiny VAE (engine.tiny_vae) that draws the previews, and the one that decodes
        # the final pictures ("fast decode"); None: linear previews, the model's own VAE.
        self._preview_vae: TinyVae | None = None
        self._decode_vae: TinyVae | None = None
        self._vae_in_fp32 = False  # set once the VAE decoder overflowed in fp16
        self._notes: list[str] = []  # what sessions could not do, not yet said (take_notes)
        self._said: set[str] = set()
        self._cuda_graph_stopped: str | None = None  # why the UNet no longer replays graphs

    def use_loras(self, loras: Sequence[tuple[Path | str, float]]) -> None:
        """Make pictures with these LoRAs (file, weight) from now on; empty (or all weights
        0) for the model as it is. Everything wrong with them is said here, in one sentence,
        before any work; the merging happens as each session is created, and a session
        made for the same LoRAs and weights is reused (see engine.lora)."""
        from engine.lora.apply import prepare_loras

        self._loras = prepare_loras(self.folder, self.description.family, self.name, loras)

    def use_embeddings(self, embeddings: Sequence[tuple[str, Path | str]]) -> None:
        """Read prompts with these textual-inversion embeddings (name as written in prompts,
        file) from now on; empty for none. Everything wrong with them is said here, in one
        sentence; their vectors join the token table as a text encoder's session is created
        (see engine.embeddings), and a name in a prompt becomes their ids."""
        from engine.embeddings import prepare_embeddings

        self._embeddings = prepare_embeddings(self.folder, self.description.family,
                                              self.name, embeddings)

    def use_tiny_vae(self, tiny: TinyVae | None, previews: bool = True,
                     fast_decode: bool = False) -> None:
        """Preview with the tiny VAE ``tiny`` (TAESD) from now on when ``previews``, and
        decode the final pictures with it when ``fast_decode``; None for the model's own VAE
        and the linear preview. ModelError in one sentence when it fits another family."""
        if tiny is not None and not (
                tiny.fits(self.description.family)
                and tiny.description.scale_factor == self.description.vae_scale_factor):
            raise ModelError(f"The tiny VAE '{tiny.name}' does not fit model '{self.name}' "
                             f"({self.description.family}).")
        self._preview_vae = tiny if previews else None
        self._decode_vae = tiny if fast_decode else None

    @property
    def preview_decoder(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """What makes a step's live preview: the tiny VAE's decoder, or None for the linear
        map of the latents (``preview_factors``)."""
        return None if self._preview_vae is None else self._preview_vae.preview

    @property
    def fast_decoder(self) -> TinyVae | None:
        """The tiny VAE that decodes the final pictures ("fast decode"), or None."""
        return self._decode_vae

    @property
    def embeddings(self) -> EmbeddingSet | None:
        """The embeddings prompts may name, or None."""
        return self._embeddings

    @cached_property
    def tokenizer(self) -> PromptTokenizer:
        return PromptTokenizer(self.folder / "tokenizer", self.description.text_max_length)

    @cached_property
    def placement(self) -> Placement | None:
        """Where objects a prompt leaves unplaced are drawn, for a model that says so (the
        starter); None for the others."""
        return load_placement(self.folder / "tokenizer")

    @cached_property
    def tokenizer_2(self) -> PromptTokenizer:
        """The second text encoder's tokenizer (SDXL: same words, padded with "!")."""
        return PromptTokenizer(self.folder / "tokenizer_2", self.description.text_max_length)

    @cached_property
    def scheduler_config(self) -> dict:
        """The diffusers ``scheduler_config.json`` (read once; callers get a copy to change)."""
        path = self.folder / "scheduler" / "scheduler_config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ModelError(f"The scheduler settings of model '{self.name}' cannot be read.") \
                from None
        if not isinstance(config, dict):
            raise ModelError(f"The scheduler settings of model '{self.name}' are damaged.")
        return config

    @property
    def text_encoder(self) -> Session:
        return self._session("text_encoder")

    @property
    def text_encoder_2(self) -> Session:
        return self._session("text_encoder_2")

    @property
    def unet(self) -> Session:
        """The UNet; on CUDA made to replay CUDA graphs (``runtime.cuda_graph``) until
        ``stop_cuda_graph``: such a session must be run through engine.runtime.binding."""
        wanted = self.runtime.cuda_graph and self._cuda_graph_stopped is None
        return self._session("unet", cuda_graph=wanted)

    def stop_cuda_graph(self, reason: str) -> None:
        """Run the UNet without CUDA graphs from now on (a replay failed: ``reason``, a
        sentence, is kept for the device report); the replaying session is let go, so its
        memory goes once callers drop theirs too."""
        if self._cuda_graph_stopped is None:
            log.warning("CUDA graphs are off for model '%s': %s", self.name, reason)
            self._cuda_graph_stopped = reason
            release_sessions(self.folder / "unet")

    @property
    def cuda_graph_stopped(self) -> str | None:
        """Why the UNet stopped replaying CUDA graphs (``stop_cuda_graph``), or None."""
        return self._cuda_graph_stopped

    @property
    def control_unet(self) -> Session:
        """The UNet that takes ControlNet residuals (engine.control.unet_variant): the
        folder's own (OnnxStack's layout) or one made from ``unet`` on first use, beside the
        optimised graphs; it keeps every weight's name, so the same LoRAs apply."""
        from engine.control.unet_variant import control_unet_path

        path = control_unet_path(self.folder, self.hash, self.runtime.optimized_cache)
        return self._noted(get_session(path, self.runtime, self.overrides_for("unet"),
                                       half=True))

    def overrides_for(self, component: str) -> InitializerOverrides | None:
        """The weights the LoRAs in use replace in ``component``'s graph, for a variant of
        that graph that keeps its weights' names (the UNets that take ControlNet residuals
        or image tokens); None without LoRAs."""
        return None if self._loras is None else self._loras.overrides(component)

    @property
    def vae_decoder(self) -> Session:
        """The VAE decoder: fp16 where the runtime calls for it, until it overflowed once
        (see ``decode``, which the pipelines decode through)."""
        return self._session("vae_decoder")

    def decode(self, latent_sample: np.ndarray, cancel: CancelToken | None = None
               ) -> tuple[np.ndarray, str | None]:
        """The VAE decoder's output ``sample`` for ``latent_sample`` (float32, already scaled
        for the VAE), and a warning the first time fp16 overflowed, else None.

        The VAE decoder runs in fp16 where the runtime calls for it; an output with inf or
        NaN in it (SDXL's VAE overflows in fp16) is decoded again in fp32, which this model
        then keeps using: the warning says so once.
        """
        session = self.vae_decoder
        (decoded,) = session.run({"latent_sample": latent_sample}, ["sample"], cancel)
        if session.precision == "fp32" or np.isfinite(decoded).all():
            return decoded, None
        self._vae_in_fp32 = True
        warning = (f"The VAE decoder of model '{self.name}' overflowed in fp16, so it decodes "
                   f"in fp32 from now on (slower, more memory).")
        log.warning("%s", warning)
        del session  # the fp16 session goes as the fp32 one comes (see get_session)
        (decoded,) = self.vae_decoder.run({"latent_sample": latent_sample}, ["sample"], cancel)
        return decoded, warning

    @property
    def vae_in_fp32(self) -> bool:
        """True once the VAE decoder fell back from fp16 to fp32 (``decode``)."""
        return self._vae_in_fp32

    @property
    def vae_encoder(self) -> Session:
        return self._session("vae_encoder")

    @property
    def preview_factors(self) -> np.ndarray | None:
        factors = self.description.preview_rgb_factors
        return None if factors is None else np.array(factors, dtype=np.float32)

    def close(self) -> None:
        """Let this model's sessions go (an app keeping a few models loaded evicts one);
        other models' stay loaded. Using the model again opens them anew."""
        release_sessions(self.folder)

    def session(self, component: str) -> Session:
        """The session of ``component`` ("unet", "text_encoder", ...), with the weights the
        LoRAs and embeddings in use change (the UNet's as ``unet`` makes it)."""
        return self.unet if component == "unet" else self._session(component)

    def _session(self, component: str, *, cuda_graph: bool = False) -> Session:
        path = self.folder / component / "model.onnx"
        if not path.is_file():
            raise ModelError(f"Model '{self.name}' has no {component.replace('_', ' ')}.")
        overrides = None if self._loras is None else self._loras.overrides(component)
        if self._embeddings is not None and component.startswith("text_encoder"):
            overrides = _joined(overrides, self._embeddings.overrides(component))
        half = component in HALF_GRAPHS and not (
            component == "vae_decoder" and self._vae_in_fp32)
        return self._noted(get_session(path, self.runtime, overrides, half=half,
                                       cuda_graph=cuda_graph))

    def _noted(self, session: Session) -> Session:
        """Keep what ``session`` could not do as asked (fp16, CUDA graphs) for the next
        result's warnings: the user hears it, once per model, never only the log."""
        for note in session.notes:
            if note not in self._said:
                self._said.add(note)
                self._notes.append(note)
        return session

    def take_notes(self) -> list[str]:
        """The sentences the sessions opened since the last call left (``_noted``)."""
        notes, self._notes = self._notes, []
        return notes


def _joined(first: InitializerOverrides | None, second: InitializerOverrides
            ) -> InitializerOverrides:
    """Both sets of replaced weights in one session (a LoRA never changes the token table
    that embeddings enlarge)."""
    if first is None:
        return second

    def build() -> tuple[dict[str, np.ndarray], frozenset[str]]:
        values, external = first.build()
        more, more_external = second.build()
        return {**values, **more}, external | more_external

    return InitializerOverrides((first.key, second.key), build)


def load_model(folder: Path, runtime: RuntimeOptions | None = None,
               name: str | None = None) -> Model:
    """Open a model folder after the cheap integrity check (sizes and dates, see manifest)."""
    folder = Path(folder)
    name = name or folder.name
    if not folder.is_dir():
        raise ModelError(f"'{folder}' is not a folder, so it cannot be a model.")
    description = ModelDescription.load(folder)  # says "not an Easel model" when absent
    verify_manifest(folder)
    second = ("text_encoder_2",) if description.text_encoders == 2 else ()
    for component in REQUIRED_GRAPHS + second:
        if not (folder / component / "model.onnx").is_file():
            raise ModelError(f"'{name}' is not a complete model: {component}/model.onnx "
                             f"is missing.")
    return Model(folder, description, runtime or RuntimeOptions(), name)


# --- Preparing a model ahead of its first use (engine.runtime.prepare) ---------------------

# UNet first: it is most of the time (about 9 s of 10 for SD 1.5 on 2 cores), so a cancel
# after it still keeps most of the gain.
PREPARED_GRAPHS: dict[str, str] = {
    "unet": "the UNet",
    "text_encoder": "the text encoder",
    "text_encoder_2": "the second text encoder",
    "vae_decoder": "the VAE decoder",
    "vae_encoder": "the VAE encoder",
}


def model_graphs(folder: Path) -> list[Graph]:
    """The graphs of a diffusion model folder a load optimises, those it has, UNet first."""
    return [Graph(Path(folder) / component / "model.onnx", label, component in HALF_GRAPHS)
            for component, label in PREPARED_GRAPHS.items()
            if (Path(folder) / component / "model.onnx").is_file()]


def prepare_model(folder: Path, runtime: RuntimeOptions,
                  progress: PrepareProgress | None = None,
                  cancel: CancelToken | None = None) -> Preparation:
    """Optimise a diffusion model's graphs for ``runtime`` now, as its first load would (their
    fp16 copies first, where the runtime runs them in fp16), and keep them in the cache, so
    that load only reads them (see engine.runtime.prepare for errors and cancelling)."""
    return prepare_graphs(model_graphs(folder), runtime, progress, cancel)
