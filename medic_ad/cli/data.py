"""``medic-ad data summary DATASET_DIR [--format NAME] [--split S] [--json]``.

The format is detected from the folder layout when ``--format`` is left out; an unknown or
ambiguous layout exits with status 2 and names the formats it could be.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``data`` command (with its ``summary`` subcommand) on ``subparsers``."""
    from medic_ad.data.registry import list_datasets

    parser = subparsers.add_parser("data", help="inspect datasets", description="Inspect datasets.")
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    summary = commands.add_parser(
        "summary",
        help="count samples per label, split and change label",
        description="Count the samples of a dataset folder per label, split and change label.",
    )
    summary.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR", help="the dataset folder")
    summary.add_argument("--format", choices=list_datasets(), help="dataset format (default: detected)")
    summary.add_argument("--split", help="count only this split (train, val, test)")
    summary.add_argument("--json", action="store_true", help="print JSON instead of tables")
    summary.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a ``data`` subcommand; 0 on success, 2 when the folder cannot be read as a dataset."""
    if args.data_command == "summary":
        return _summary(args)
    raise ValueError(f"unknown data command {args.data_command!r}")


def _summary(args: argparse.Namespace) -> int:
    from medic_ad.data.errors import DatasetFormatError, EmptyDatasetError
    from medic_ad.data.registry import detect_format, get_dataset
    from medic_ad.data.summary import render_summary, summarize

    root: Path = args.dataset_dir
    try:
        name = args.format or detect_format(root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped rows are shown in the report table instead
            samples = get_dataset(name).load(
                root, split=args.split, progress=not (args.json or args.no_progress)
            )
    except (DatasetFormatError, EmptyDatasetError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarize(samples, format=name, root=str(root))
    if args.json:
        print(json.dumps({"summary": summary.to_dict(), "report": samples.report.to_dict()}, indent=2))
    else:
        render_summary(summary, samples.report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m medic_ad.cli.data summary DIR`` (argv after ``data``)."""
    parser = argparse.ArgumentParser(prog="medic-ad")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
