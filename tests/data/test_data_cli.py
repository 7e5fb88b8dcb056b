"""``medic-ad data summary`` on every shared folder, as tables and as JSON, and its errors."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import pytest

from medic_ad.cli.data import add_parser, main, run

EXPECTED_TOTALS = {
    "br35h": (2328, {"abnormal": 1211, "normal": 1117}, {"train": 1862, "val": 466}),
    "br35h_masks": (727, {"abnormal": 727}, {"train": 586, "val": 141}),
    "figshare_masks": (1200, {"abnormal": 1200}, {"-": 1200}),
    "head_ct_dev": (40, {"abnormal": 20, "normal": 20}, {"-": 40}),
    "brain_mri_dev": (40, {"abnormal": 20, "normal": 20}, {"-": 40}),
    "covid_cxr_dev": (10, {"abnormal": 5, "normal": 5}, {"-": 10}),
    "cxr_pairs": (171, {"-": 171}, {"train": 140, "val": 31}),
}


@pytest.mark.parametrize("folder", sorted(EXPECTED_TOTALS))
def test_summary_json_for_every_shared_folder(shared_data: Path, folder: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["summary", str(shared_data / folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    total, labels, splits = EXPECTED_TOTALS[folder]
    assert out["summary"]["total"] == total
    assert out["summary"]["by_label"] == labels and out["summary"]["by_split"] == splits
    assert out["report"]["skipped"] == {}
    if folder == "cxr_pairs":
        assert out["summary"]["pairs"] == 171 and out["summary"]["groups"] == 94
        assert out["summary"]["by_change"] == {"-": 171}


def test_summary_table(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["summary", str(shared_data / "br35h"), "--format", "image_folder", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for text in ("image_folder", "2328", "1862", "466", "1211", "1117", "abnormal", "normal"):
        assert text in out
    assert main(["summary", str(shared_data / "br35h"), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["total"] == 466


def test_summary_errors_exit_2_and_name_candidates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "images").mkdir()
    assert main(["summary", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image_mask" in err and "Traceback" not in err
    assert main(["summary", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_add_parser_registers_data_summary() -> None:
    parser = argparse.ArgumentParser(prog="medic-ad")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "summary", "some/dir", "--format", "bmad", "--json"])
    assert args.func is run and args.dataset_dir == Path("some/dir") and args.format == "bmad" and args.json


def test_lead_cli_main_dispatches_to_data(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        cli_main = importlib.import_module("medic_ad.cli.main")
    except ImportError:
        pytest.skip("medic_ad.cli.main is not there yet")
    if not hasattr(cli_main, "main"):
        pytest.skip("medic_ad.cli.main has no main() yet")
    try:
        code = cli_main.main(["data", "summary", str(shared_data / "head_ct_dev"), "--json"])
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    assert json.loads(capsys.readouterr().out)["summary"]["total"] == 40
