"""What Easel.app tells macOS about itself (its Info.plist), and which pictures it opens.

Read by easel.spec when it builds the bundle. Plain Python with no imports beyond the standard
library, so tests read it too.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

BUNDLE_IDENTIFIER = "org.easel.Easel"

# (what Finder calls it, its uniform type identifier, its file name extensions)
PICTURE_TYPES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("PNG image", "public.png", ("png",)),
    ("JPEG image", "public.jpeg", ("jpg", "jpeg")),
    ("WebP image", "org.webmproject.webp", ("webp",)),
)
PICTURE_EXTENSIONS = tuple(f".{ext}" for _, _, extensions in PICTURE_TYPES for ext in extensions)


def project_version(pyproject: Path | None = None) -> str:
    pyproject = pyproject or Path(__file__).resolve().parents[2] / "pyproject.toml"
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]


def bundle_version(version: str) -> str:
    """CFBundleVersion is up to three numbers: 0.1.0 -> 0.1.0, 1.2rc1 -> 1.2."""
    match = re.match(r"\d+(\.\d+){0,2}", version)
    if not match:
        raise ValueError(f"the version {version!r} does not start with a number")
    return match.group()


def info_plist(version: str) -> dict:
    """Info.plist entries beyond those PyInstaller writes itself."""
    return {
        "CFBundleName": "Easel",
        "CFBundleDisplayName": "Easel",
        "CFBundleShortVersionString": version,
        "CFBundleVersion": bundle_version(version),
        "LSApplicationCategoryType": "public.app-category.graphics-design",
        "NSHighResolutionCapable": True,
        # "Open With > Easel" in Finder (Alternate: never the default viewer). Finder hands the
        # picture over as a FileOpen event, which the window takes (desktop.app.file_open_events).
        "CFBundleDocumentTypes": [
            {
                "CFBundleTypeName": name,
                "CFBundleTypeRole": "Viewer",
                "LSHandlerRank": "Alternate",
                "LSItemContentTypes": [uti],
                "CFBundleTypeExtensions": list(extensions),
            }
            for name, uti, extensions in PICTURE_TYPES
        ],
    }
