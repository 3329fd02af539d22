"""Where each image's random numbers come from: the generator a seed is fed to.

A seed remakes a picture only with the generator it was made with (design.md, Seeds), so
every picture names its generator and requests choose one:

- ``numpy``: numpy's PCG64, ``numpy.random.default_rng(seed)``; Easel's own and its default.
  Pictures store it as "numpy-pcg64-standard-normal-float32", as they always have.
- ``torch-cpu``: ``torch.randn`` on the CPU (AUTOMATIC1111's "RNG: CPU"); see torch_cpu.
- ``torch-cuda``: ``torch.randn`` on an NVIDIA GPU (A1111's default "GPU" and its "NV"
  source); see torch_cuda.

Every pipeline makes one generator per image from seed + i and draws from it in a fixed
order: the initial noise first, then (image to image, inpainting) the VAE encoder's sample,
then the per-step noise of ancestral and other stochastic samplers. For the torch
generators that is A1111's order too: A1111 makes one generator per image from seed + i
(modules/rng.py, ImageRNG), draws the initial noise from it and hands the k-diffusion
samplers the same generator's next draws for their per-step noise (sd_samplers_common's
TorchHijack), so Euler a, DPM++ 2S a and the like remake A1111's per-step noise, with its
default "Eta noise seed delta" of 0 (a non-zero delta reseeds the per-step generator with
seed + delta, which Easel does not do). A1111 samples the VAE encoder from torch's global
generator instead, which no seed pins down; Easel draws that sample from the image's own
generator, after the initial noise, so image to image stays reproducible.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from engine.errors import BadRequest
from engine.noise.torch_cpu import TorchCpuGenerator
from engine.noise.torch_cuda import TorchCudaGenerator

NUMPY = "numpy"
TORCH_CPU = "torch-cpu"
TORCH_CUDA = "torch-cuda"
GENERATOR_NAMES = (NUMPY, TORCH_CPU, TORCH_CUDA)
# How pictures name numpy's generator, since before there was a choice.
NUMPY_STORED_NAME = "numpy-pcg64-standard-normal-float32"
# AUTOMATIC1111's "RNG" setting for the generators it has: "NV" rather than its default
# "GPU" for torch-cuda, since NV gives these very values on any machine, NVIDIA or not.
_A1111_RNG = {TORCH_CPU: "CPU", TORCH_CUDA: "NV"}


class NoiseGenerator(Protocol):
    """What pipelines, schedulers and the VAE sampling draw from."""

    def standard_normal(self, shape: tuple[int, ...], dtype: type = ...) -> np.ndarray: ...


def generator_name(name: str) -> str:
    """The short name ("numpy", "torch-cpu", "torch-cuda") of a generator named either way
    (a picture's stored name or the short one); an unknown name is refused."""
    if name == NUMPY_STORED_NAME:
        return NUMPY
    if name not in GENERATOR_NAMES:
        raise BadRequest(f"Unknown random generator '{name}'; choose one of "
                         f"{', '.join(GENERATOR_NAMES)}.")
    return name


def stored_name(name: str) -> str:
    """The name a picture records: numpy's long name, which old pictures carry, or the short
    name of a torch generator."""
    name = generator_name(name)
    return NUMPY_STORED_NAME if name == NUMPY else name


def a1111_rng_name(name: str) -> str | None:
    """The "RNG" setting that makes A1111 draw a generator's noise (named either way), None
    for numpy, which A1111 cannot draw, and for a name this Easel does not know."""
    return _A1111_RNG.get(name)


def make_generator(name: str, seed: int) -> NoiseGenerator:
    """The generator for one image, fed ``seed`` (seed + i for image i of a batch)."""
    name = generator_name(name)
    if name == TORCH_CPU:
        return TorchCpuGenerator(seed)
    if name == TORCH_CUDA:
        return TorchCudaGenerator(seed)
    return np.random.default_rng(seed)
