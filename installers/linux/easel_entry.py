"""The frozen app's entry point: the same as the `easel` console command (desktop.cli:main)."""

import sys

from desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
