#!/usr/bin/env bash
# The test command: sets up .venv with the test tools, then lint, layer contracts and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash installers/setup.sh --test
.venv/bin/ruff check .
.venv/bin/lint-imports
QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest "$@"
