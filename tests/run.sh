#!/usr/bin/env bash
# The test command: sets up .venv with the test tools, then lint, layer contracts and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${EASEL_VENV:-.venv}  # installers/try-newest.sh runs the same tests in .venv-newest
bash installers/setup.sh --test
# The starter model's scene tests draw Noto Color Emoji (Debian/Ubuntu: fonts-noto-color-emoji).
if [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji; } \
    >/dev/null 2>&1 || echo "run.sh: could not install fonts-noto-color-emoji; its tests will skip" >&2
fi
# The package tests check the menu entries with desktop-file-validate (desktop-file-utils);
# installed here, before pytest, not only by the package check that runs after it.
if ! command -v desktop-file-validate >/dev/null && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq desktop-file-utils; } \
    >/dev/null 2>&1 || echo "run.sh: could not install desktop-file-utils; its tests will skip" >&2
fi
# The desktop app's tests run Qt offscreen; PySide6's wheel still needs these system libraries.
if ! "$venv"/bin/python -c "import PySide6.QtWidgets" 2>/dev/null && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 \
      libxkbcommon0 libfontconfig1 libfreetype6 libglib2.0-0 libdbus-1-3 fonts-dejavu-core; } \
    >/dev/null 2>&1 || echo "run.sh: could not install Qt's system libraries; app tests will fail" >&2
fi
"$venv"/bin/ruff check .
"$venv"/bin/lint-imports
QT_QPA_PLATFORM=offscreen "$venv"/bin/python -m pytest "$@"
# Last: the Linux package built, installed and run as a user would (installers/linux/ci-check.sh,
# about 6 minutes). EASEL_SKIP_PACKAGE=1 skips it for a quick local run.
if [ "${EASEL_SKIP_PACKAGE:-}" = 1 ]; then
    echo "run.sh: the Linux package check was skipped (EASEL_SKIP_PACKAGE=1)."
elif command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null && [ "$(id -u)" = 0 ]; then
    bash installers/linux/ci-check.sh
    [ "${EASEL_SKIP_IMPORTER_PACKAGE:-}" = 1 ] || bash installers/linux/importer-check.sh  # ~6 min
else
    echo "run.sh: the Linux package check was skipped: it needs apt-get, dpkg-deb and root."
fi
