"""What Content Credentials (and the optional watermark) add to saving a picture.

Usage: ``python tests/benchmarks/credentials_cost.py [--sizes 512 1024] [--rounds 20]``

Saves the same picture into two scratch libraries, one with Content Credentials (the default)
and one without, alternating the two every round so other work on a shared machine disturbs
both alike; then a third with the watermark on too. Each save is the library's whole
``add_generated``: PNG encoding, signing, the atomic write with its fsyncs, the index row. The
first signature (which makes the installation's key) is timed apart. Prints the medians, the
difference per picture and the ratio; the target (issue 21) is that signing adds at most 50 ms
per 512×512 picture.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from desktop.library import Library
from desktop.provenance.policy import ProvenanceSettings
from engine.request import GenerationParameters

PARAMETERS = GenerationParameters(prompt="a lighthouse at dusk", negative_prompt="", width=512,
                                  height=512, steps=20,
                                  guidance=7.5, scheduler="euler", seed=1, model_name="bench",
                                  model_hash="0123456789", model_family="sd1")


def _scene(size: int) -> np.ndarray:
    """Smooth gradients with some texture: encodes like a picture, not like noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    texture = np.random.default_rng(0).normal(0, 6, (size, size, 3))
    scene = np.stack([200 * x, 160 * y, 120 * (1 - x * y)], axis=-1) + texture
    return np.clip(scene, 0, 255).astype(np.uint8)


def _timed(library: Library, pixels: np.ndarray) -> float:
    started = time.perf_counter()
    library.add_generated(pixels, PARAMETERS)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--rounds", type=int, default=20)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        signed = Library.open(root / "signed")
        plain = Library.open(root / "plain", provenance=ProvenanceSettings(credentials=False))
        marked = Library.open(root / "marked", provenance=ProvenanceSettings(watermark=True))
        try:
            first = _timed(signed, _scene(64))
            print(f"first signature (makes the key): {first * 1000:.0f} ms")
            for size in arguments.sizes:
                pixels = _scene(size)
                for library in (signed, plain, marked):
                    _timed(library, pixels)  # warm: caches, the signer
                times: dict[str, list[float]] = {"signed": [], "plain": [], "marked": []}
                for round_number in range(arguments.rounds):
                    order = ("signed", "plain") if round_number % 2 == 0 else ("plain", "signed")
                    for name in order:
                        times[name].append(_timed(signed if name == "signed" else plain, pixels))
                    times["marked"].append(_timed(marked, pixels))
                medians = {name: statistics.median(values) for name, values in times.items()}
                added = medians["signed"] - medians["plain"]
                print(f"{size}x{size}: save without credentials {medians['plain'] * 1000:.1f} ms, "
                      f"with {medians['signed'] * 1000:.1f} ms: signing adds "
                      f"{added * 1000:.1f} ms per picture (ratio "
                      f"{medians['signed'] / medians['plain']:.3f}; target at 512: at most "
                      f"50 ms); with the watermark too {medians['marked'] * 1000:.1f} ms")
        finally:
            for library in (signed, plain, marked):
                library.close()


if __name__ == "__main__":
    main()
