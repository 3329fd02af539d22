"""The noise ``torch.randn`` gives on the CPU after ``torch.Generator("cpu").manual_seed(seed)``
(AUTOMATIC1111's "RNG: CPU"), in numpy, so seeds shared from torch-based tools remake here.

torch's CPU generator is a 32-bit Mersenne Twister (MT19937) seeded with the seed's low 32
bits. ``randn`` then takes one of two paths (aten/src/ATen/native/cpu/DistributionTemplates.h):

- 16 values or more (every latent): one uniform float per value, the 24 low bits of one
  32-bit draw; then Box-Muller on blocks of 16 in float32 (``normal_fill_16_AVX2``, the path
  torch takes on every x86-64 CPU with AVX2), the first 8 giving the radius from log(1 - u)
  and the next 8 the angle, cosines into the first half and sines into the second. When the
  size is not a multiple of 16, 16 fresh uniforms replace the last 16 values and are
  transformed as one more block, overwriting what the full blocks wrote there.
- fewer than 16 values: one value at a time by float64 Box-Muller from two 53-bit uniforms
  (each made of two 32-bit draws); the second value of each pair is kept in the generator
  and handed out first by the next small draw, as torch keeps it.

torch without AVX2 (old x86 CPUs, ARM such as Apple silicon) runs the 16-value blocks with
the C library's float32 functions instead; its values then differ from these in the last bit
or so, well below anything a picture shows.
"""

from __future__ import annotations

import math

import numpy as np

from engine.noise import avx_math

# Box-Muller's angle factor: float32 in the vectorised path, float64 in the one-by-one path.
_TWO_PI = np.float32(2.0 * math.pi)
_TWO_PI_DOUBLE = 2.0 * math.pi
_BLOCK = 16


class TorchCpuGenerator:
    """A stream of standard normal float32 values equal to torch's CPU ``randn`` stream."""

    def __init__(self, seed: int) -> None:
        # numpy's legacy seeding is MT19937's reference initialisation (init_genrand), the
        # one torch uses, so numpy's own Mersenne Twister gives torch's 32-bit draws.
        state = np.random.RandomState(seed & 0xFFFFFFFF).get_state(legacy=False)
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": state["state"]}
        self._cached_normal: float | None = None  # the second value of a small draw's pair

    def standard_normal(self, shape: int | tuple[int, ...],
                        dtype: type = np.float32) -> np.ndarray:
        if np.dtype(dtype) != np.float32:
            raise ValueError("torch-compatible noise is drawn in float32 only.")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        size = math.prod(shape)
        values = self._normal_fill(size) if size >= _BLOCK else self._one_by_one(size)
        return values.reshape(shape)

    def _uniform_floats(self, count: int) -> np.ndarray:
        """[0, 1) floats from the 24 low bits of each 32-bit draw (exact in float32)."""
        draws = self._bits.random_raw(count) & 0xFFFFFF
        return draws.astype(np.float32) * np.float32(2.0**-24)

    def _normal_fill(self, size: int) -> np.ndarray:
        uniforms = self._uniform_floats(size)
        whole = size - size % _BLOCK
        values = np.empty(size, dtype=np.float32)
        values[:whole] = _box_muller_blocks(uniforms[:whole].reshape(-1, _BLOCK)).reshape(-1)
        if whole != size:
            tail = self._uniform_floats(_BLOCK).reshape(1, _BLOCK)
            values[size - _BLOCK:] = _box_muller_blocks(tail).reshape(-1)
        return values

    def _one_by_one(self, size: int) -> np.ndarray:
        values = np.empty(size, dtype=np.float32)
        for index in range(size):
            if self._cached_normal is not None:
                values[index], self._cached_normal = self._cached_normal, None
                continue
            angle = _TWO_PI_DOUBLE * self._uniform_double()
            radius = math.sqrt(-2.0 * math.log1p(-self._uniform_double()))
            self._cached_normal = radius * math.sin(angle)
            values[index] = radius * math.cos(angle)
        return values

    def _uniform_double(self) -> float:
        """A [0, 1) double from the 53 low bits of two draws, the first one the high word."""
        high, low = (int(draw) for draw in self._bits.random_raw(2))
        return (((high << 32) | low) & ((1 << 53) - 1)) * 2.0**-53


def _box_muller_blocks(uniforms: np.ndarray) -> np.ndarray:
    """torch's normal_fill_16_AVX2 on each row of 16 uniforms, all in float32."""
    first, second = uniforms[:, :8], uniforms[:, 8:]
    radius = np.sqrt(np.float32(-2) * avx_math.log(np.float32(1) - first))
    sine, cosine = avx_math.sin_cos(_TWO_PI * second)
    out = np.empty_like(uniforms)
    out[:, :8] = radius * cosine
    out[:, 8:] = radius * sine
    return out
