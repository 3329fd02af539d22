"""The starter model's word-level tokenizer, written as a standard ``tokenizer.json``.

The starter model knows a few dozen words, so its tokenizer is a word list: lower-cased,
punctuation dropped, one id per word, "[UNK]" for any other word. It is saved in the
`tokenizers` library's format with CLIP's shape (a start token, an end token, padding after),
so the engine's ``PromptTokenizer`` reads it like any imported model's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

from engine.placement import Placement
from engine.starter.objects import OBJECT_WORDS, POSITION_PHRASES
from engine.starter.scenes import vocabulary

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
TEXT_MAX_LENGTH = 24  # the longest caption is 18 words, plus the start and end tokens
# Known words that name nothing: a prompt of these and unknown words is refused.
FUNCTION_WORDS = ("a", "against", "an", "and", "at", "background", "in", "on", "the", "with")
# Where objects a prompt leaves unplaced are drawn (``engine.placement``): one in the centre, two
# side by side, the layouts it draws each object of exactly once.
PLACEMENT = Placement(
    objects=frozenset(OBJECT_WORDS),
    place_words=frozenset(word for phrases in POSITION_PHRASES.values() for phrase in phrases
                          for word in phrase.split() if word not in FUNCTION_WORDS),
    one=POSITION_PHRASES["centre"][0],
    two=(POSITION_PHRASES["left"][0], POSITION_PHRASES["right"][0]))


def build_tokenizer() -> Tokenizer:
    words = list(SPECIAL_TOKENS) + list(vocabulary())
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        special_tokens=[(BOS, words.index(BOS)), (EOS, words.index(EOS))],
    )
    return tokenizer


def write_tokenizer_folder(folder: Path) -> None:
    """``tokenizer.json`` and the small config files that name its special tokens."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    special = {"pad_token": PAD, "unk_token": UNK, "bos_token": BOS, "eos_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {**special, "model_max_length": TEXT_MAX_LENGTH,
              "tokenizer_class": "PreTrainedTokenizerFast",
              "function_words": list(FUNCTION_WORDS), "placement": PLACEMENT.as_config()}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
