"""Which process does which study: ranks under ``accelerate launch``, a share fixed by the study UID's hash.

A study goes to rank ``sha256(study UID) mod N`` whatever order the files were found in, so the
shares are disjoint, cover everything, and every series of a study (and the comparison whose
current study it is) lands on the same rank.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Ranks", "owner"]


def owner(study_uid: str, world: int) -> int:
    """The rank that processes ``study_uid`` among ``world`` processes."""
    return int(hashlib.sha256(study_uid.encode()).hexdigest()[:16], 16) % world


@dataclass
class Ranks:
    """This process's rank and the number of processes."""

    rank: int = 0
    world: int = 1

    @classmethod
    def detect(cls) -> "Ranks":
        """One process, or the ranks ``accelerate launch`` (torchrun) set up.

        The process group is torch.distributed's own (gloo when there is no GPU): accelerate's
        state reports a CPU-only multi-process launch as one process, though the launcher started N.
        """
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", timeout=timedelta(hours=24))
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, study_uid: str) -> bool:
        return owner(study_uid, self.world) == self.rank

    def wait(self) -> None:
        """Every rank reaches this point before any goes on (a no-op for one process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
