"""Placeholder: this entry point is filled by its own issue."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def main(args: argparse.Namespace) -> int:
    print("distillery: this command is not implemented yet", file=sys.stderr)
    return 2
