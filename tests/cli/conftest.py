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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny model gains nothing from a second intra-op thread on 2 shared cores; spinning costs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
