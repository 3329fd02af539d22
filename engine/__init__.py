"""Easel's generation engine: Stable Diffusion on ONNX Runtime.

No Qt, no user data, synchronous. The generation path imports only onnxruntime, numpy,
tokenizers and Pillow; torch and friends live in ``engine.export`` behind an install extra.
"""

__version__ = "0.1.0"
