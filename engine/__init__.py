"""Easel's generation engine: Stable Diffusion on ONNX Runtime.

No Qt, no user data, synchronous. The generation path imports only onnxruntime, numpy,
tokenizers and Pillow; torch and friends live in ``engine.export`` behind an install extra.
"""

import os

__version__ = "0.1.0"

# onnxruntime 1.29 and later send usage telemetry from Linux and macOS too (a name lookup of
# mobile.events.data.microsoft.com about 9 s after it loads), and its
# disable_telemetry_events() does not stop that; only this variable, read once before
# onnxruntime starts, does. Every import of onnxruntime in Easel is under `engine`, so this is
# set before any. Nothing leaves the machine (tests/test_offline.py).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
