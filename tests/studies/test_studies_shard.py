"""Sharding: each rank's share is disjoint and complete; 2 processes under accelerate launch = 1 process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from study_builders import corrupt_dicom, write_ct_series
from medic_ad.studies.shard import owner

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 300  # not a speed check: only stops a hung launch from stalling the suite


def test_shares_are_disjoint_and_cover_every_study():
    uids = [f"1.2.3.{i}" for i in range(200)]
    shares = [{u for u in uids if owner(u, 3) == r} for r in range(3)]
    assert set().union(*shares) == set(uids) and sum(map(len, shares)) == len(uids)
    assert all(len(s) > 30 for s in shares)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    for i in range(5):
        write_ct_series(tmp_path / "in" / f"s{i}", n=3, lesion=(i % 3,), seed=i, patient_id="P",
                        study_date=f"2020010{i + 1}")
    corrupt_dicom(tmp_path / "in" / "bad.dcm")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    job = ["-m", "medic_ad.cli.main", "predict", str(tmp_path / "in"), "--model-type", "dummy", "--num-workers", "0",
           "--no-progress", "--compare"]
    one = subprocess.run([sys.executable, *job, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=HANG_GUARD_S)
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    two = subprocess.run([*launch, *job, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 0 of 2" in two.stderr  # really two processes
    for name in ("studies.jsonl", "comparisons.jsonl"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    assert len((tmp_path / "one" / "studies.jsonl").read_text().splitlines()) == 6
    assert not (tmp_path / "two" / "parts").exists()
