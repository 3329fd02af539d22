"""The frozen app's entry point on macOS (Easel.app/Contents/MacOS/Easel): the same as the
`easel` console command (desktop.cli:main). With no arguments it opens the window."""

import sys

from desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
