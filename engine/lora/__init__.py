"""LoRAs applied at session creation: merged into the weights they name, never re-exported.

``engine.lora.apply.prepare_loras`` checks a set of LoRA files against a model (what
``engine.model.Model.use_loras`` calls); ``engine.lora.tags`` reads ``<lora:NAME:WEIGHT>``
out of a prompt. The files are found by name by the application (its model store); the
engine only ever sees paths.
"""

from engine.lora.apply import LORA_FILE, lora_name, prepare_loras
from engine.lora.tags import extract_lora_tags, parse_lora_option

__all__ = ["LORA_FILE", "extract_lora_tags", "lora_name", "parse_lora_option",
           "prepare_loras"]
