"""Fixtures of the CLI verb tests; the bad-input corpus comes from tests/serve/bad_inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from bad_inputs.generate import write_bad_pairs, write_corpus, write_good  # noqa: E402


@pytest.fixture(scope="session")
def cli_corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("cli_bad_inputs")
    return folder, write_corpus(folder)


@pytest.fixture(scope="session")
def cli_bad_pairs(tmp_path_factory):
    return write_bad_pairs(tmp_path_factory.mktemp("cli_bad_pairs"))


@pytest.fixture(scope="session")
def cli_good(tmp_path_factory) -> list[Path]:
    return write_good(tmp_path_factory.mktemp("cli_good"), 2)


@pytest.fixture(scope="session")
def testdata():
    from pydicom.data import get_testdata_file

    def get(name: str) -> Path:
        path = get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"{name} is not installed (pydicom-data)")
        return Path(path)

    return get


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
