#!/usr/bin/env bash
# The test command: sets up .venv with the test tools, then lint, layer contracts and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${EASEL_VENV:-.venv}  # installers/try-newest.sh runs the same tests in .venv-newest
bash installers/setup.sh --test
# System packages the tests need, in one apt-get run when any is missing: Noto Color Emoji for
# the starter model's scene tests, desktop-file-validate for the menu-entry tests (before
# pytest, not only in the package check after it), and the libraries PySide6's wheel needs to
# run Qt offscreen.
needed=()
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || needed+=(fonts-noto-color-emoji)
command -v desktop-file-validate >/dev/null || needed+=(desktop-file-utils)
"$venv"/bin/python -c "import PySide6.QtWidgets" 2>/dev/null || needed+=(libegl1 libgl1 \
    libxkbcommon0 libfontconfig1 libfreetype6 libglib2.0-0 libdbus-1-3 fonts-dejavu-core)
if [ ${#needed[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}"; } \
    >/dev/null 2>&1 || echo "run.sh: could not install ${needed[*]}; the tests that need them will skip or fail" >&2
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
