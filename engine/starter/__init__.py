"""Data groundwork for the built-in starter model (issue 3).

Scenes composed from Noto Color Emoji glyphs on plain backgrounds, captioned from their Unicode
names (``objects``), rendered and sampled with a fixed train / held-out split (``scenes``), and
the reference-rendering evaluator that judges generated images (``evaluate_reference``).
numpy and Pillow only: the generation path never imports torch.
"""
