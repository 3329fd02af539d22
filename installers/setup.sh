#!/usr/bin/env bash
# Sets up Easel in ./.venv on Linux or macOS: Python 3.11, the app, and the model exporter.
#   bash installers/setup.sh          app + exporter (what `easel models import` needs)
#   bash installers/setup.sh --test   also the test tools
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
if ! command -v "$python" >/dev/null; then
    echo "setup: Easel needs Python 3.11 ($python was not found; set PYTHON=/path/to/python3.11)." >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch is only for exporting models. Pin it first: an unpinned torch pulls a multi-GB CUDA
# build, and 2.13.0 satisfies the range in pyproject.toml.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"

extras="export"
[ "${1:-}" = "--test" ] && extras="export,test"
"${pip[@]}" install -e ".[$extras]"
echo "setup: ready. Run .venv/bin/easel --help" >&2
