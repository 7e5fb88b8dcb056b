"""The training loop every stage recipe shares, on HF Accelerate.

The same loop runs on this CPU and under ``accelerate launch`` (DDP, DeepSpeed ZeRO-2/3, FSDP; see
``recipes/accelerate/`` and ``docs/training.md``). ``optim.batch_size`` is the global batch of an optimizer
step: every process trains on its own disjoint slice of it, and the LR schedule counts optimizer steps,
so a run's batches and learning rates do not depend on the number of processes.

Determinism for resume: the batch of a step comes from the step-indexed sampler, collation and the
forward pass draw from RNGs seeded from (seed, step, micro-batch), so a run killed at any point and
restarted with ``resume=True`` continues with the same loss curve, with or without DataLoader workers.
"""

from __future__ import annotations

import json
import os
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs
from accelerate.utils import gather_object
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medic_ad.processes import die_with_parent
from medic_ad.training import engines
from medic_ad.training.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    load_train_state,
    save_train_state,
    write_optimizer_shard,
)
from medic_ad.training.config import TrainConfig, config_to_dict
from medic_ad.training.mixture import MixtureSampler, batch_split

logger = logging.getLogger("medic_ad.training")

LossFn = Callable[[nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]

_DATA, _FORWARD = 0, 1  # RNG streams: collation (augmentations) and the forward pass (dropout)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    output: Path
    seconds: float


def cosine_with_warmup(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def step_seed(seed: int, step: int, part: int, stream: int) -> int:
    """The seed of micro-batch ``part`` (rank × grad_accum + micro) of optimizer step ``step``."""
    return int(np.random.SeedSequence([seed, step, part, stream]).generate_state(1)[0] & 0x7FFFFFFF)


class StepBatches(Dataset):
    """Item ``i``: this process's collated micro-batch ``i`` (optimizer step ``i // grad_accum``).

    A map-style dataset over micro-step indices, so a DataLoader's workers collate the next micro-steps
    while the model trains on this one; each item seeds its own RNG, so a worker gives the batch the
    loop would.
    """

    def __init__(self, sampler: MixtureSampler, collate: Callable, *, seed: int, rank: int, world_size: int,
                 grad_accum: int) -> None:
        self.sampler, self.collate, self.seed = sampler, collate, seed
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum

    def __getitem__(self, index: int) -> dict:
        step, micro = divmod(index, self.grad_accum)
        picked = self.sampler.share(step, rank=self.rank, world_size=self.world_size, micro=micro,
                                    grad_accum=self.grad_accum)
        torch.manual_seed(step_seed(self.seed, step, self.rank * self.grad_accum + micro, _DATA))
        return self.collate([s for s, _ in picked], [t for _, t in picked])


def _as_is(batch):
    return batch


def step_loader(dataset: StepBatches, *, start: int, steps: int, num_workers: int, prefetch_factor: int,
                pin_memory: bool = False) -> DataLoader:
    """The micro-batches of optimizer steps ``start`` … ``steps - 1``, in order."""
    indices = range(start * dataset.grad_accum, steps * dataset.grad_accum)
    return DataLoader(dataset, batch_size=None, sampler=indices, collate_fn=_as_is, num_workers=num_workers,
                      prefetch_factor=prefetch_factor if num_workers else None, pin_memory=pin_memory,
                      worker_init_fn=die_with_parent if num_workers else None)


def run_training(
    cfg: TrainConfig,
    *,
    model: nn.Module,
    loss_fn: LossFn,
    collate: Callable[[list], dict],
    sampler: MixtureSampler,
    save_final: Callable[[nn.Module, Path], None],
    resume: bool = False,
) -> TrainResult:
    """Train ``model``'s trainable parameters for ``cfg.optim.max_steps`` optimizer steps and save the result.

    ``save_final(model, folder)`` runs once, on the main process, over a model that holds full weights
    (gathered from every rank under FSDP and ZeRO-3).
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"
    cpu = not torch.cuda.is_available()
    handlers: list = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        # DeepSpeed has a CPU accelerator (gloo), but accelerate enables DeepSpeed only when not told
        # cpu=True, and without a named backend it takes the run for one process
        cpu = False
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    # DDP: a batch may leave a whole module unused (stage 2 without a pair, stage 0 without a pasted
    # region), and on one rank but not another; DDP then waits for gradients that never come.
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        cpu=cpu,
        step_scheduler_with_optimizer=False,  # stepped once per optimizer step below, not once per process
        kwargs_handlers=handlers,
    )
    world = accelerator.num_processes
    micro_batch, grad_accum = batch_split(cfg.optim.batch_size, world, grad_accum=cfg.optim.grad_accum,
                                          micro_batch_size=cfg.optim.micro_batch_size)
    accelerator.gradient_accumulation_steps = grad_accum
    rank, engine = accelerator.process_index, engines.engine_name(accelerator)
    engines.check_requested(engine)
    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds_plugin is not None:
        engines.fill_deepspeed_config(ds_plugin.deepspeed_config, model, micro_batch=micro_batch,
                                      grad_accum=grad_accum, world_size=world)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"stage {cfg.stage}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW([p for _, p in named], lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(cfg.optim.warmup_steps, cfg.optim.max_steps, cfg.optim.min_lr_ratio)
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    engines.register_outside_reads(accelerator, accelerator.unwrap_model(model))
    if accelerator.is_main_process:
        logger.info("engine %s, %d process(es): global batch %d = %d per forward × %d accumulation × %d",
                    engine, world, cfg.optim.batch_size, micro_batch, grad_accum, world)
    start = 0
    if resume:
        found = latest_checkpoint(ckpt_root)
        if found is None:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", ckpt_root)
        else:
            state = load_train_state(found, rank=rank)
            missing = {n for n, _ in named} - set(state.trainable)
            if missing:
                raise CheckpointError(f"{found}: does not hold this stage's parameters (e.g. {sorted(missing)[0]})")
            if state.optimizer_shards and state.optimizer_shards != world:
                raise CheckpointError(f"{found}: its optimizer state is split over {state.optimizer_shards} "
                                      f"ranks (DeepSpeed ZeRO); resume it on {state.optimizer_shards}, not {world}")
            engines.load_trainable(accelerator, model, state.trainable)
            engines.load_optimizer_state(accelerator, model, optimizer, state.optimizer)
            scheduler.load_state_dict(state.scheduler)
            start = state.step
            logger.info("resumed from %s at step %d", found, start)
    metrics_path = out / "metrics.jsonl"
    if accelerator.is_main_process:
        _truncate_metrics(metrics_path, start)
    writer = _tensorboard(out / "tensorboard") if cfg.tensorboard and accelerator.is_main_process else None
    model.train()
    batches = StepBatches(sampler, collate, seed=cfg.seed, rank=rank, world_size=world, grad_accum=grad_accum)
    loader = iter(step_loader(batches, start=start, steps=cfg.optim.max_steps, num_workers=cfg.num_workers,
                              prefetch_factor=cfg.prefetch_factor, pin_memory=not cpu))
    bar = tqdm(range(start, cfg.optim.max_steps), initial=start, total=cfg.optim.max_steps,
               desc=f"stage {cfg.stage}", disable=not (cfg.progress and accelerator.is_main_process),
               dynamic_ncols=True)
    t0 = time.perf_counter()
    loss_value = float("nan")
    log = metrics_path.open("a") if accelerator.is_main_process else None
    try:
        for step in bar:
            tick = time.perf_counter()
            totals: dict[str, float] = {}
            for micro in range(grad_accum):
                batch = next(loader)
                torch.manual_seed(step_seed(cfg.seed, step, rank * grad_accum + micro, _FORWARD))
                with accelerator.accumulate(model):
                    loss, parts = loss_fn(model, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                        accelerator.clip_grad_norm_([p for _, p in named], cfg.optim.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) / grad_accum
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + v / grad_accum
            totals = _mean_over_ranks(totals, world)
            loss_value = totals["loss"]
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"stage {cfg.stage}: loss became {loss_value} at step {step}")
            lr = scheduler.get_last_lr()[0]
            rate = cfg.optim.batch_size / max(time.perf_counter() - tick, 1e-9)
            record = {"step": step + 1, **{k: round(v, 6) for k, v in totals.items()}, "lr": lr,
                      "samples_per_s": round(rate, 2)}
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
                if writer is not None:
                    for k, v in record.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, step + 1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", sps=f"{rate:.1f}")
            done = step + 1
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.optim.max_steps:
                _checkpoint(accelerator, model, optimizer, scheduler, named, ckpt_root, done, cfg)
    finally:
        if log is not None:
            log.close()
    accelerator.wait_for_everyone()
    if writer is not None:
        writer.close()
    full = engines.full_state_dict(accelerator, model)  # every rank: a gather under FSDP / ZeRO-3
    if accelerator.is_main_process:
        with engines.holding(accelerator.unwrap_model(model), full) as whole:
            save_final(whole, out / "final")
    accelerator.wait_for_everyone()
    return TrainResult(steps=cfg.optim.max_steps, final_loss=loss_value, output=out / "final",
                       seconds=time.perf_counter() - t0)


def _mean_over_ranks(totals: dict[str, float], world: int) -> dict[str, float]:
    """Each logged value averaged over the ranks that report it (a loss part can be absent on one rank)."""
    if world == 1:
        return totals
    merged: dict[str, list[float]] = {}
    for ranked in gather_object([totals]):
        for k, v in ranked.items():
            merged.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in merged.items()}


def _checkpoint(accelerator: Accelerator, model, optimizer, scheduler, named, root: Path, step: int,
                cfg: TrainConfig) -> None:
    accelerator.wait_for_everyone()
    full = engines.full_state_dict(accelerator, model)  # every rank: a gather under FSDP / ZeRO-3
    sharded = engines.optimizer_sharded(accelerator)
    opt_state = engines.optimizer_state(accelerator, model, optimizer)
    if sharded:
        write_optimizer_shard(root, step, accelerator.process_index, opt_state)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        names = {n for n, _ in named}
        trainable = {k: v for k, v in full.items() if k in names}
        save_train_state(root, TrainState(step=step, trainable=trainable, optimizer={} if sharded else opt_state,
                                          scheduler=scheduler.state_dict(),
                                          extra={"config": config_to_dict(cfg)}),
                         keep=cfg.keep_checkpoints, shards=accelerator.num_processes if sharded else 0)
    accelerator.wait_for_everyone()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop logged steps after ``step`` (a resumed run logs them again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            continue  # a line torn by a kill
    path.write_text("".join(k + "\n" for k in kept))


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; stay usable without it
        logger.warning("tensorboard is not installed; scalars go to metrics.jsonl only")
        return None
    return SummaryWriter(str(path))


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
