"""The float32 log, sine and cosine that torch's CPU ``randn`` computes with, bit for bit.

torch's vectorised Box-Muller (``normal_fill_16_AVX2``) takes them from avx_mathfun.h, the
AVX port of Julien Pommier's sse_mathfun: the Cephes polynomials evaluated in float32. Built
with FMA, the compiler fuses each multiply that feeds an add into one rounding, so this
module fuses exactly those (found by matching torch's output on every value tried). numpy's
own float32 functions round differently in about one value of ten, hence this copy.
"""

from __future__ import annotations

import numpy as np

_F32 = np.float32
_F64 = np.float64

# Cephes' log: log(1 + x) ~ x - x^2/2 + x^3 P(x), and ln 2 split in two parts.
_LOG_P = tuple(_F32(p) for p in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                                 -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                                 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1))
_LOG_Q1 = _F32(-2.12194440e-4)
_LOG_Q2 = _F32(0.693359375)
_SQRT_HALF = _F32(0.707106781186547524)

# Cephes' sine and cosine on [-pi/4, pi/4], after reducing by pi/4 in three parts.
_FOUR_OVER_PI = _F32(1.27323954473516)
_MINUS_PI_4 = (_F32(-0.78515625), _F32(-2.4187564849853515625e-4),
               _F32(-3.77489497744594108e-8))
_SIN_P = (_F32(-1.9515295891e-4), _F32(8.3321608736e-3), _F32(-1.6666654611e-1))
_COS_P = (_F32(2.443315711809948e-5), _F32(-1.388731625493765e-3),
          _F32(4.166664568298827e-2))
_HALF = _F32(0.5)
_ONE = _F32(1)


def fused_multiply_add(a: np.ndarray, b: np.ndarray | np.float32,
                       c: np.ndarray | np.float32) -> np.ndarray:
    """float32 a * b + c with one rounding, as the FMA instruction gives it.

    The product of two float32s is exact in float64; the sum is made exact by rounding it
    to odd (the neighbour with an odd last bit when it was inexact), which a second rounding
    to float32 cannot then round wrongly.
    """
    product = np.asarray(a, _F64) * np.asarray(b, _F64)
    addend = np.asarray(c, _F64)
    total = product + addend
    # Knuth's two-sum: what the float64 sum left out.
    addend_part = total - product
    error = (product - (total - addend_part)) + (addend - addend_part)
    inexact_even = (error != 0) & ((total.view(np.int64) & 1) == 0)
    if inexact_even.any():
        towards = np.where(error > 0, np.inf, -np.inf)
        total = np.where(inexact_even, np.nextafter(total, towards), total)
    return total.astype(_F32)


def log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive normal float32 values, as avx_mathfun's log256_ps."""
    bits = x.view(np.int32)
    exponent = ((bits >> 23) - 127).astype(_F32) + _ONE
    # The mantissa as a number in [0.5, 1).
    x = ((bits & ~0x7F800000) | 0x3F000000).view(_F32)
    small = x < _SQRT_HALF
    exponent = exponent - np.where(small, _ONE, _F32(0))
    x = (x - _ONE) + np.where(small, x, _F32(0))
    square = x * x
    y = np.full_like(x, _LOG_P[0])
    for coefficient in _LOG_P[1:]:
        y = fused_multiply_add(y, x, coefficient)
    y = fused_multiply_add(y * x, square, exponent * _LOG_Q1)
    y = fused_multiply_add(square, -_HALF, y)
    return fused_multiply_add(exponent, _LOG_Q2, x + y)


def sin_cos(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sine and cosine of non-negative float32 values, as avx_mathfun's sincos256_ps."""
    octant = (x * _FOUR_OVER_PI).astype(np.int32)
    octant = (octant + 1) & ~1
    y = octant.astype(_F32)
    for part in _MINUS_PI_4:
        x = fused_multiply_add(y, part, x)
    square = x * x
    cosine = np.full_like(x, _COS_P[0])
    for coefficient in _COS_P[1:]:
        cosine = fused_multiply_add(cosine, square, coefficient)
    cosine = fused_multiply_add(cosine * square, square, -(square * _HALF)) + _ONE
    sine = np.full_like(x, _SIN_P[0])
    for coefficient in _SIN_P[1:]:
        sine = fused_multiply_add(sine, square, coefficient)
    sine = fused_multiply_add(sine * square, x, x)
    # Which polynomial is which, and the signs, follow the octant as in Cephes.
    swap = (octant & 2) != 0
    sine, cosine = np.where(swap, cosine, sine), np.where(swap, sine, cosine)
    sine = np.where((octant & 4) != 0, -sine, sine)
    cosine = np.where(((octant - 2) & 4) == 0, -cosine, cosine)
    return sine, cosine
