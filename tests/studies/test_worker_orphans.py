"""A killed job leaves no decoding worker behind (medic_ad/processes.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# a loader over slow items whose results pile up in the queue while the parent sits on its first batch:
# the state in which a worker outlives a SIGKILLed parent for ever without die_with_parent
SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    from medic_ad.processes import die_with_parent

    class Slow(torch.utils.data.Dataset):
        def __len__(self): return 10_000
        def __getitem__(self, i): return torch.zeros(64, 1024)

    init = die_with_parent if sys.argv[1] == "on" else None
    loader = torch.utils.data.DataLoader(Slow(), batch_size=8, num_workers=2, prefetch_factor=8,
                                         worker_init_fn=init)
    it = iter(loader)
    next(it)
    print("ready", flush=True)
    time.sleep(600)
""")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = next(line for line in (Path("/proc") / str(pid) / "status").read_text().splitlines()
                     if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "Z" not in state  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, "on"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the two workers (and maybe torch's pin thread, which is not a process)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # the kernel ends them with their parent; torch's own check would take its 5 s status interval
        # at best, and never returns from a worker stuck flushing a full result pipe
        deadline = time.monotonic() + 2
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers)
    finally:
        proc.kill()
