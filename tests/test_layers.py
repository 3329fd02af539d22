"""The layering in design.md, checked: the generation path stays free of torch and Qt."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GENERATION_MODULES = [
    "engine", "engine.model", "engine.pipelines.text_to_image", "engine.runtime",
    "engine.schedulers", "engine.tokenizer", "engine.images", "engine.request",
    "engine.export",  # the package itself must stay importable without torch
    "engine.starter.vocabulary", "engine.starter.evaluate",  # the starter model, used
    "engine.onnx_folder", "engine.vae_encoding",  # checked ONNX folders, used as they are
    "desktop.cli", "desktop.model_store", "desktop.image_files", "desktop.paths",
    "desktop.model_kinds", "desktop.model_sources.scan", "desktop.model_sources.hf_cache",
    "desktop.catalogue",
]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 7 kept, 0 broken" in result.stdout


def test_generation_path_loads_no_torch_at_run_time():
    # Import-linter sees static imports; this catches lazy ones done at import time too.
    code = (
        "import sys\n"
        f"for name in {GENERATION_MODULES!r}: __import__(name)\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'onnx', 'PySide6')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == ""
