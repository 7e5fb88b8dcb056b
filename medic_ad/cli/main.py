"""``medic-ad`` command line: one sub-command module per verb, registered in ``_COMMANDS``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# verb module → its `add_parser(subparsers)` registers the verb and sets `func` (args -> exit code).
_COMMANDS = [
    "medic_ad.cli.data",
    "medic_ad.cli.train",
    "medic_ad.cli.demo",
    "medic_ad.cli.answer",
    "medic_ad.cli.predict",
    "medic_ad.cli.serve",
    "medic_ad.cli.eval",
]


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medic-ad", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"medic-ad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medic-ad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
