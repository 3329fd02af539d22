"""The frozen model importer's entry point (the easel-importer package).

It is the `easel` command (desktop.cli:main) with the export stack and without Qt. It also
stands in for the Python interpreter that the pickle converter starts for its isolated
``torch.load`` (``sys.executable -I -c SCRIPT ARG...``, engine/export/pickle_convert.py): in a
frozen program sys.executable is this program, and there is no other Python to start.
"""

import sys

USAGE = ("easel-importer imports models for Easel, which runs it for you; it has no window. "
         "By hand: easel-importer models import SOURCE --name NAME.")


def run_isolated_script(script: str, arguments: list[str]) -> None:
    """What ``python -I -c SCRIPT ARG...`` does: run SCRIPT as __main__ with those arguments.
    (A frozen program already ignores PYTHON* variables, the user's site folder and the
    current folder: the isolation that -I asks for.)"""
    sys.argv = ["-c", *arguments]
    exec(compile(script, "<string>", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    if sys.argv[1:3] == ["-I", "-c"] and len(sys.argv) > 3:
        run_isolated_script(sys.argv[3], sys.argv[4:])
        sys.exit(0)
    if len(sys.argv) == 1:  # plain `easel` opens the window, which this program leaves out
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    from desktop.cli import main

    sys.exit(main())
