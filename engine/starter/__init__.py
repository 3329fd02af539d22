"""The built-in starter model (issue 3): a small text-to-image model trained here, on scenes
drawn from Noto Color Emoji glyphs, shipped in ``resources/models/starter``.

- ``objects``, ``scenes``: the objects, colours and positions; scenes rendered, captioned,
  sampled, with a fixed train / held-out split (see DATA.md).
- ``vocabulary``: the word-level tokenizer, written as a standard ``tokenizer.json``.
- ``evaluate_reference``, ``evaluate``: the reference-rendering judge, and the script that
  measures a model folder with it through the engine.
- ``training``: the networks, the chunked training command and the export (torch; only
  training imports it, the generation path never does).
"""
