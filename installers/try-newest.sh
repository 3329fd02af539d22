#!/usr/bin/env bash
# Tries the newest versions that pyproject.toml allows, on purpose, so that drift is found by
# someone who asked for it and not by the next CI run:
#   bash installers/try-newest.sh [pytest arguments]
# Builds .venv-newest without the pins (torch stays 2.13.0: any other build is a multi-GB
# download), runs the whole test command there, and only if it passes rewrites
# installers/constraints.txt from it. Review `git diff installers/constraints.txt` and commit
# the moved pins with the test run that passed. .venv is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-newest
EASEL_VENV=.venv-newest EASEL_NEWEST=1 bash tests/run.sh "$@"
bash installers/freeze.sh .venv-newest
git --no-pager diff --stat -- installers/constraints.txt
