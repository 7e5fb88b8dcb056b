"""DataLoader worker processes that do not outlive the process that started them.

When a job is killed (SIGKILL, the OOM killer, a node losing its allocation), torch's workers notice
only when they next look for work, and a worker whose result queue still holds batches then blocks
for ever at exit, flushing them into a pipe nobody reads: an orphan holding its memory. On Linux the
kernel can end a worker together with its parent (``PR_SET_PDEATHSIG``); elsewhere torch's own
check is all there is.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(_worker_id: int = 0) -> None:
    """``worker_init_fn`` for a DataLoader: this worker gets SIGKILL when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # a libc without prctl: torch's own parent check remains
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(0)
