"""The noise ``torch.randn`` gives on an NVIDIA GPU, in numpy: AUTOMATIC1111's default "GPU"
source and its "NV" source (modules/rng_philox.py), which reproduces the GPU on any machine.

torch's CUDA generator is counter-based: Philox4x32-10 keyed by the seed (low word, high
word) and fed a 128-bit counter. For a tensor of n values, value i is made by thread i from
the counter (call, 0, i, 0), where ``call`` counts the draws made since seeding (torch's
philox offset, which grows by 4 per draw, over the 4 values a counter gives); the counter's
first two 32-bit outputs become one normal value by Box-Muller (the sine half; the other
outputs go unused). AUTOMATIC1111's NV source computes the Box-Muller step in float64 from
the float32 constants the GPU uses, then rounds to float32; the GPU computes it in float32
with fast approximations, so the two agree to about 1e-6, and this module follows the NV
source exactly.

torch lays values out like this while the GPU has a thread for every value (number of SMs
times threads per SM: 16,384 SD 1.5 latents fit any GPU, the 65,536 of SDXL fit GPUs from
about 32 SMs); past that a thread makes four values and torch's order differs, while the NV
source (and this module) keeps the one-value-per-counter layout.
"""

from __future__ import annotations

import math

import numpy as np

# Philox4x32's round multipliers and Weyl key increments (Salmon et al., 2011).
_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)
_ROUNDS = 10
_LOW_WORD = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)

# curand's Box-Muller constants, float32 as on the GPU: 2^-32, and 2^-32 times 2 pi.
_TWO_POW_MINUS_32 = float(np.float32(2.3283064e-10))
_TWO_POW_MINUS_32_TWO_PI = float(np.float32(2.3283064e-10 * 6.2831855))


class TorchCudaGenerator:
    """A stream of standard normal float32 values equal to A1111's NV (and torch CUDA's)."""

    def __init__(self, seed: int) -> None:
        self._key = (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
        self._calls = 0

    def standard_normal(self, shape: int | tuple[int, ...],
                        dtype: type = np.float32) -> np.ndarray:
        if np.dtype(dtype) != np.float32:
            raise ValueError("torch-compatible noise is drawn in float32 only.")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        size = math.prod(shape)
        if size >= 2**32:
            raise ValueError("torch-compatible GPU noise is drawn at most 2^32 values at once.")
        first, second = philox(self._calls, np.arange(size, dtype=np.uint64), self._key)
        self._calls += 1
        return _box_muller_sine(first, second).reshape(shape)


def philox(call: int, index: np.ndarray,
           key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The first two 32-bit outputs of Philox4x32-10 for the counters (call, 0, index, 0).

    Words are kept in uint64 so each 32 x 32-bit product is exact; only the key schedule is
    the same for every value, so it stays a pair of Python integers.
    """
    words = [np.full(index.shape, call & 0xFFFFFFFF, np.uint64),
             np.zeros(index.shape, np.uint64), index.astype(np.uint64),
             np.zeros(index.shape, np.uint64)]
    key_0, key_1 = key
    for round_number in range(_ROUNDS):
        if round_number:
            key_0 = (key_0 + _KEY_STEPS[0]) & 0xFFFFFFFF
            key_1 = (key_1 + _KEY_STEPS[1]) & 0xFFFFFFFF
        product_0 = words[0] * _MULTIPLIERS[0]
        product_1 = words[2] * _MULTIPLIERS[1]
        words = [(product_1 >> _SHIFT) ^ words[1] ^ np.uint64(key_0), product_1 & _LOW_WORD,
                 (product_0 >> _SHIFT) ^ words[3] ^ np.uint64(key_1), product_0 & _LOW_WORD]
    return words[0], words[1]


def _box_muller_sine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """curand's Box-Muller on two 32-bit words, the sine half, in float64 as the NV source."""
    radius_uniform = first.astype(np.float64) * _TWO_POW_MINUS_32 + _TWO_POW_MINUS_32 / 2
    angle = (second.astype(np.float64) * _TWO_POW_MINUS_32_TWO_PI
             + _TWO_POW_MINUS_32_TWO_PI / 2)
    radius = np.sqrt(-2.0 * np.log(radius_uniform))
    return (radius * np.sin(angle)).astype(np.float32)
