"""Pictures that share UNet calls (engine.pipelines.batching): the pixels each has alone,
its progress each step, how many share a call, and running out of memory (fewer pictures a
call, then one sentence with a size that would fit, the engine still usable)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

from engine.errors import GenerationFailed
from engine.manifest import write_manifest
from engine.model import load_model
from engine.pipelines import batching
from engine.pipelines.guides import Guides
from engine.pipelines.image_to_image import ImageToImagePipeline
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import ImageToImageRequest, TextToImageRequest
from engine.runtime import RuntimeOptions
from engine.runtime.binding import BoundCalls
from engine.runtime.errors import OutOfMemory, out_of_memory_at, smaller_size
from tests import tiny_models_xl

SMALL = {"width": 64, "height": 48, "steps": 4}
PROMPT = {"prompt": "a dog", "negative_prompt": "a cat"}
# What CUDA's memory arena says when it cannot grow (onnxruntime 1.x).
ORT_OUT_OF_MEMORY = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
    "Conv node. Name:'/conv_in/Conv' Status Message: /onnxruntime_src/onnxruntime/core/"
    "framework/bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool) "
    "Failed to allocate memory for requested buffer of size 1073741824")


def model_copy(source: Path, folder: Path, image_batch: int):
    """A model of its own (sessions, CUDA graph state) with ``image_batch`` pictures a call."""
    if not folder.exists():
        shutil.copytree(source, folder)
        write_manifest(folder)
    return load_model(folder, RuntimeOptions(image_batch=image_batch))


@pytest.fixture(scope="module")
def sd1(installed_tiny_sd1, tmp_path_factory):
    """image_batch -> the tiny SD 1.5 model with that setting."""
    folder = tmp_path_factory.mktemp("batching") / "sd1"
    return {batch: model_copy(installed_tiny_sd1, folder, batch) for batch in (0, 1, 2, 3, 4)}


@pytest.fixture
def unet_calls(monkeypatch):
    """The number of samples of every UNet call."""
    samples = []
    call = BoundCalls.__call__

    def counting(self, feeds, cancel):
        samples.append(len(feeds["sample"]))
        return call(self, feeds, cancel)

    monkeypatch.setattr(BoundCalls, "__call__", counting)
    return samples


def pixels(result) -> np.ndarray:
    return np.stack([image.pixels for image in result.images]).astype(int)


def assert_same_pictures(batched, alone) -> None:
    # The UNet computes each sample alone, so a picture's prediction is the same in any
    # batch but for the order of additions: onnxruntime's GEMMs and convolutions block
    # their work by the batch's size, so a bigger batch may round differently in the last
    # bit of a float; through the steps that may reach one level of 255, never more.
    assert np.abs(pixels(batched) - pixels(alone)).max() <= 1
    assert [image.parameters for image in batched.images] == [
        image.parameters for image in alone.images]


# --- the same pixels as one at a time ----------------------------------------------------


@pytest.mark.parametrize("scheduler", ["euler_ancestral", "dpmpp_2m", "ddim"])
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_text_to_image_batched_makes_the_pictures_made_alone(sd1, unet_calls, scheduler,
                                                             guidance):
    request = TextToImageRequest(**PROMPT, **SMALL, scheduler=scheduler, guidance=guidance,
                                 count=4, seed=21)
    alone = TextToImagePipeline(sd1[1])(request)
    samples = 2 if guidance > 1 else 1
    assert unet_calls == [samples] * 4 * 4
    unet_calls.clear()
    batched = TextToImagePipeline(sd1[3])(request)
    # Three pictures a call, then the fourth alone, each of the four steps.
    assert unet_calls == [3 * samples] * 4 + [samples] * 4
    assert_same_pictures(batched, alone)
    assert [image.parameters.seed for image in batched.images] == [21, 22, 23, 24]
    # Each picture is its seed's: made alone with its own seed, it is the same again.
    third = TextToImagePipeline(sd1[3])(TextToImageRequest(
        **PROMPT, **SMALL, scheduler=scheduler, guidance=guidance, seed=23))
    assert np.array_equal(third.images[0].pixels, alone.images[2].pixels)


@pytest.mark.parametrize("scheduler", ["euler_ancestral", "dpmpp_2m"])
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_image_to_image_batched_makes_the_pictures_made_alone(sd1, unet_calls, scheduler,
                                                              guidance):
    picture = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    request = ImageToImageRequest(picture, **PROMPT, steps=4, strength=0.6,
                                  scheduler=scheduler, guidance=guidance, count=3, seed=8)
    alone = ImageToImagePipeline(sd1[1])(request)
    unet_calls.clear()
    batched = ImageToImagePipeline(sd1[3])(request)
    samples = 2 if guidance > 1 else 1
    assert unet_calls == [3 * samples] * 2  # strength 0.6 of 4 steps runs 2
    assert_same_pictures(batched, alone)


@pytest.mark.slow
def test_sdxl_batched_makes_the_pictures_made_alone(tmp_path, unet_calls):
    """SDXL's size conditioning and pooled embeddings are batched with the pictures too."""
    folder = tmp_path / "sdxl"
    source = tiny_models_xl.tiny_onnx("sdxl")
    request = TextToImageRequest(**PROMPT, **SMALL, scheduler="euler_ancestral",
                                 guidance=5.0, count=2, seed=3)
    alone = TextToImagePipeline(model_copy(source, folder, 1))(request)
    unet_calls.clear()
    batched = TextToImagePipeline(model_copy(source, folder, 2))(request)
    assert unet_calls == [4] * 4
    assert_same_pictures(batched, alone)


def test_progress_reports_every_picture_of_a_shared_call_each_step(sd1):
    seen = []
    request = TextToImageRequest(**PROMPT, **SMALL, scheduler="euler", count=3, seed=2)
    result = TextToImagePipeline(sd1[2])(request, on_progress=seen.append)
    # Pictures 1 and 2 share calls, then picture 3 is alone: each picture's steps in order.
    assert [(p.image, p.images, p.step, p.steps) for p in seen] == [
        (image, 3, step, 4) for step in range(1, 5) for image in (0, 1)] + [
        (2, 3, step, 4) for step in range(1, 5)]
    # Each report previews its own picture's latents.
    assert not np.array_equal(seen[6].latents, seen[7].latents)
    assert len(result.images) == 3
    # Each says its group, so the whole request's share done is right: after step 2 of the
    # first two pictures, 2 × 2/4 of 3 pictures.
    assert [(p.group_start, p.group_size) for p in seen[2:4]] == [(0, 2), (0, 2)]
    assert seen[3].done == seen[2].done == (0 + 2 * 2 / 4) / 3
    assert (seen[-1].group_start, seen[-1].group_size, seen[-1].done) == (2, 1, 1.0)


def test_the_queue_counts_pictures_made_together():
    from desktop.app.viewmodels.jobs import JobRow, describe
    from desktop.app.worker import JobProgress

    together = JobProgress(step=2, steps=4, image=0, images=3, elapsed_s=10.0, together=2)
    assert together.fraction == (0 + 2 * 2 / 4) / 3
    assert together.seconds_left == 10.0 * (1 - together.fraction) / together.fraction
    row = JobRow(1, "a cat", "generate", running=True, progress=together)
    assert describe(row).startswith("images 1–2/3 · step 2/4")
    alone = JobProgress(step=2, steps=4, image=2, images=3, elapsed_s=10.0)
    assert describe(JobRow(1, "a cat", "generate", running=True, progress=alone)).startswith(
        "image 3/3 · step 2/4")


# --- how many pictures share a call ------------------------------------------------------


def test_the_device_chooses_unless_the_setting_does():
    latent = 2 * 64 * 64  # an SD 1.5 picture at 512 × 512 with guidance
    assert batching.images_per_call(0, "cpu", 8, latent) == 1
    assert batching.images_per_call(0, "cuda", 8, latent) == 4
    assert batching.images_per_call(0, "cuda", 3, latent) == 3  # never more than asked
    assert batching.images_per_call(0, "cuda", 8, 64 * 64) == 8  # a turbo model, no guidance
    assert batching.images_per_call(0, "directml", 8, 2 * 128 * 128) == 1  # SDXL at 1024
    assert batching.images_per_call(0, "cuda", 8, 4 * 128 * 128) == 1  # over the budget alone
    assert batching.images_per_call(5, "cpu", 8, latent) == 5
    assert batching.images_per_call(5, "cuda", 2, latent) == 2


def test_a_pipeline_asks_the_device_in_use_and_keeps_guided_calls_alone(sd1):
    pipeline = TextToImagePipeline(sd1[0])
    assert pipeline.images_per_call(4, True, (1, 4, 24, 32)) == 1  # the CPU provider
    assert TextToImagePipeline(sd1[4]).images_per_call(4, True, (1, 4, 24, 32)) == 4
    with_control = Guides(control=object())  # ControlNets put the negative row first
    assert TextToImagePipeline(sd1[4]).images_per_call(4, True, (1, 4, 24, 32),
                                                       with_control) == 1


# --- out of memory -----------------------------------------------------------------------


class _Binding:
    """An IO binding that remembers how many samples its latents hold."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.samples = 0

    def bind_cpu_input(self, name, value) -> None:
        if name == "sample":
            self.samples = len(value)
        self.inner.bind_cpu_input(name, value)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class SmallMemory:
    """An onnxruntime session on a device too small for more than ``most`` samples a run,
    from its ``after``-th run on, failing as onnxruntime does when CUDA's arena cannot grow;
    ``most`` = 0: not even one. Everything else is the real session's."""

    def __init__(self, inner, most: int, after: int = 0) -> None:
        self.inner = inner
        self.most = most
        self.after = after
        self.runs = []  # samples of every run that ran

    def io_binding(self) -> _Binding:
        return _Binding(self.inner.io_binding())

    def run_with_iobinding(self, binding: _Binding, run_options=None) -> None:
        if binding.samples > self.most and len(self.runs) >= self.after:
            raise RuntimeException(ORT_OUT_OF_MEMORY)
        self.inner.run_with_iobinding(binding.inner, run_options)
        self.runs.append(binding.samples)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_out_of_memory_halves_the_pictures_a_call_and_loses_no_work(sd1, monkeypatch):
    request = TextToImageRequest(**PROMPT, **SMALL, scheduler="dpmpp_2m", guidance=7.5,
                                 count=4, seed=30)
    alone = TextToImagePipeline(sd1[1])(request)
    unet = sd1[4].unet
    small = SmallMemory(unet.ort_session, most=4, after=2)
    monkeypatch.setattr(unet, "_inner", small)
    batched = TextToImagePipeline(sd1[4])(request)
    # Two steps of all four pictures (8 samples), the third fails; then two pictures a call
    # go on from the third step: the first two steps are not made again.
    assert small.runs == [8, 8, 4, 4, 4, 4]
    assert_same_pictures(batched, alone)
    assert "Out of memory with 4 pictures in one UNet call on CPU; made 2 at a time " \
           "instead." in batched.warnings


def test_out_of_memory_alone_says_what_size_would_fit_and_the_engine_goes_on(sd1, monkeypatch):
    unet = sd1[1].unet
    small = SmallMemory(unet.ort_session, most=0)
    monkeypatch.setattr(unet, "_inner", small)
    pipeline = TextToImagePipeline(sd1[1])
    request = TextToImageRequest(**PROMPT, width=256, height=192, steps=2, seed=1)
    with pytest.raises(OutOfMemory) as caught:
        pipeline(request)
    assert isinstance(caught.value, GenerationFailed)
    assert str(caught.value) == (
        "Out of memory on the computer drawing even one 256×192 picture: try 128×128 "
        "(at most half the pixels), or close other programs.")
    # The memory is back (another program closed): the same pipeline and session work.
    small.most = 2
    again = pipeline(TextToImageRequest(**PROMPT, **SMALL, seed=1))
    monkeypatch.undo()
    assert np.array_equal(again.images[0].pixels,
                          pipeline(TextToImageRequest(**PROMPT, **SMALL, seed=1)).images[0].pixels)


def test_out_of_memory_sentences_name_the_exact_sizes():
    assert str(out_of_memory_at("CUDA", 1024, 1024)) == (
        "Out of memory on the GPU (CUDA) drawing even one 1024×1024 picture: try 704×704 "
        "(at most half the pixels), or switch to the CPU.")
    assert smaller_size(1216, 832) == (832, 576)  # 0.47 of the pixels
    assert smaller_size(512, 512) == (320, 320)  # 384 × 384 would be 0.56 of them
    assert smaller_size(128, 64) == (64, 64)
    assert smaller_size(72, 72) is None  # 64 × 64 is more than half: nothing smaller fits
    assert str(out_of_memory_at("CUDA", 64, 64)) == (
        "Out of memory on the GPU (CUDA) drawing even one 64×64 picture: switch to the CPU.")
