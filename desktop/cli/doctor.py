"""The ``easel doctor`` command; the report itself is desktop/doctor.py's."""

from __future__ import annotations

import argparse

from desktop import doctor as desktop_doctor


def add_commands(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser("doctor", help="a report of this installation to paste "
                                                "into a bug report (never uses the network)")
    desktop_doctor.add_arguments(doctor)
    doctor.set_defaults(run=desktop_doctor.run)
