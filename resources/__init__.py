"""Easel's read-only files, installed as the package ``easel_resources`` (pyproject.toml maps
this folder to that name): the starter model, the CLIP tokenizer files, the family configs and
the icons. ``engine.resource_files`` finds them; nothing here is code."""
