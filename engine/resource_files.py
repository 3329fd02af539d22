"""Where Easel's read-only files are: the starter model, tokenizer files, family configs, icons.

They live in the repository's ``resources/`` folder, which is installed as the package
``easel_resources`` (pyproject.toml maps the one to the other), so an editable checkout, an
installed wheel and a frozen app all find them the same way, through ``importlib.resources``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from engine.errors import EaselError


def resource_path(*parts: str) -> Path:
    """A file or folder of Easel's resources, e.g. ``resource_path("tokenizers", "clip")``.

    A real path, because ONNX Runtime and the tokenizers read files by name."""
    return _root().joinpath(*parts)


def _root() -> Path:
    try:
        # Imported by name, not only named to importlib.resources: a freezer (PyInstaller)
        # follows import statements, and so bundles the package.
        import easel_resources
    except ModuleNotFoundError:
        # A source checkout run without installing it (no editable install either).
        checkout = Path(__file__).resolve().parents[1] / "resources"
        if (checkout / "__init__.py").is_file():
            return checkout
        raise EaselError(
            "Easel's resource files are missing (the easel_resources package is not "
            "installed); reinstall Easel.") from None
    root = resources.files(easel_resources)
    if not isinstance(root, Path):
        raise EaselError(
            f"Easel's resource files are inside an archive ({root}); install Easel unpacked.")
    return root
