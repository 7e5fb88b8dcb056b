"""The training loop every stage recipe shares, on HF Accelerate.

The same loop runs on this CPU and under ``accelerate launch`` (DDP, DeepSpeed ZeRO-2/3, FSDP; see
``recipes/accelerate/``). Determinism for resume: the batch of a step comes from the step-indexed
sampler and the dropout RNG is re-seeded from (seed, step), so a run killed at any point and restarted
with ``resume=True`` continues with the same loss curve.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from medic_ad.training.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    load_train_state,
    save_train_state,
)
from medic_ad.training.config import TrainConfig, config_to_dict
from medic_ad.training.mixture import MixtureSampler

logger = logging.getLogger("medic_ad.training")

LossFn = Callable[[nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]


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


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2**31 - 1)


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
    """Train ``model``'s trainable parameters for ``cfg.optim.max_steps`` steps and save the result."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.optim.grad_accum,
        cpu=not torch.cuda.is_available(),
    )
    sampler.rank, sampler.world_size = accelerator.process_index, accelerator.num_processes
    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds_plugin is not None:  # no dataloader is prepared, so DeepSpeed's "auto" batch size is set here
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.optim.batch_size
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"stage {cfg.stage}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW([p for _, p in named], lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(cfg.optim.warmup_steps, cfg.optim.max_steps, cfg.optim.min_lr_ratio)
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    start = 0
    if resume:
        found = latest_checkpoint(ckpt_root)
        if found is None:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", ckpt_root)
        else:
            state = load_train_state(found)
            missing = {n for n, _ in named} - set(state.trainable)
            if missing:
                raise CheckpointError(f"{found}: does not hold this stage's parameters (e.g. {sorted(missing)[0]})")
            accelerator.unwrap_model(model).load_state_dict(state.trainable, strict=False)
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
            start = state.step
            logger.info("resumed from %s at step %d", found, start)
    metrics_path = out / "metrics.jsonl"
    _truncate_metrics(metrics_path, start)
    writer = _tensorboard(out / "tensorboard") if cfg.tensorboard and accelerator.is_main_process else None
    model.train()
    bar = tqdm(range(start, cfg.optim.max_steps), initial=start, total=cfg.optim.max_steps,
               desc=f"stage {cfg.stage}", disable=not (cfg.progress and accelerator.is_main_process),
               dynamic_ncols=True)
    t0 = time.perf_counter()
    loss_value = float("nan")
    with metrics_path.open("a") as log:
        for step in bar:
            tick = time.perf_counter()
            totals: dict[str, float] = {}
            for micro in range(cfg.optim.grad_accum):
                index = step * cfg.optim.grad_accum + micro
                picked = sampler.batch_at(index)
                torch.manual_seed(_step_seed(cfg.seed, index))  # before collate: augmentations draw from it
                batch = collate([s for s, _ in picked], [t for _, t in picked])
                with accelerator.accumulate(model):
                    loss, parts = loss_fn(model, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                        accelerator.clip_grad_norm_([p for _, p in named], cfg.optim.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) / cfg.optim.grad_accum
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + v / cfg.optim.grad_accum
            loss_value = totals["loss"]
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"stage {cfg.stage}: loss became {loss_value} at step {step}")
            lr = scheduler.get_last_lr()[0]
            rate = cfg.optim.batch_size * cfg.optim.grad_accum / max(time.perf_counter() - tick, 1e-9)
            record = {"step": step + 1, **{k: round(v, 6) for k, v in totals.items()}, "lr": lr,
                      "samples_per_s": round(rate, 2)}
            if accelerator.is_main_process:
                log.write(json.dumps(record) + "\n")
                log.flush()
                if writer is not None:
                    for k, v in record.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, step + 1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", sps=f"{rate:.1f}")
            done = step + 1
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.optim.max_steps:
                accelerator.wait_for_everyone()
                full = accelerator.get_state_dict(model)  # every rank: a gather under FSDP / ZeRO-3
                if accelerator.is_main_process:
                    _save(full, optimizer, scheduler, named, ckpt_root, done, cfg)
    accelerator.wait_for_everyone()
    if writer is not None:
        writer.close()
    if accelerator.is_main_process:
        save_final(accelerator.unwrap_model(model), out / "final")
    return TrainResult(steps=cfg.optim.max_steps, final_loss=loss_value, output=out / "final",
                       seconds=time.perf_counter() - t0)


def _save(full: dict, optimizer, scheduler, named, root: Path, step: int, cfg: TrainConfig) -> None:
    names = {n for n, _ in named}
    trainable = {k: v for k, v in full.items() if k in names}
    save_train_state(root, TrainState(step=step, trainable=trainable, optimizer=optimizer.state_dict(),
                                      scheduler=scheduler.state_dict(), extra={"config": config_to_dict(cfg)}),
                     keep=cfg.keep_checkpoints)


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
