"""Fixtures of the CLI verb tests; the bad-input corpus and DICOM fixtures are in tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli(capsys, tiny_checkpoint):
    """``cli("detect", "x.png", ...)`` -> (exit code, stdout, stderr), with --model set to the tiny checkpoint."""
    from medic_ad.cli.main import main

    def run(*argv: str, model: bool = True) -> tuple[int, str, str]:
        args = [str(a) for a in argv]
        if model:
            args += ["--model", str(tiny_checkpoint)]
        code = main(args)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
