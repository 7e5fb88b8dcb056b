"""Engines: the global batch, the LR schedule and checkpoints do not depend on the number of processes.

Multi-process tests run ``accelerate launch --multi_gpu --num_processes 2`` on this CPU machine, which gives
two CPU ranks over gloo (``--cpu --num_processes 2`` would run one). DeepSpeed runs on its CPU accelerator
when it is installed (``pip install -e .[deepspeed]``); without it those tests skip.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medic_ad.models.medic_ad import MedicAD
from medic_ad.training import load_config, train
from medic_ad.training.checkpoint import (
    CheckpointError,
    TrainState,
    flatten_state,
    latest_checkpoint,
    load_train_state,
    save_train_state,
    unflatten_state,
    write_optimizer_shard,
)
from medic_ad.training.engines import fill_deepspeed_config, holding
from medic_ad.training.loop import read_metrics
from medic_ad.training.mixture import MixtureSampler, batch_split

REPO = Path(__file__).resolve().parents[2]
TINY = {"anomaly_dim": 32, "qformer_dim": 32, "qformer_layers": 1, "heatmap_dim": 16, "lora_r": 4}
DET = {"name": "synthetic", "task": "detection", "options": {"kind": "detection", "n": 32, "size": 56}}
PAIRS = {"name": "synthetic", "task": "change", "options": {"kind": "pairs", "n": 16, "size": 56}}
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def _cfg(out: Path, *, stage: int = 1, inp: str = "tiny", data=(DET,), steps: int = 6, batch: int = 4, **extra):
    cfg = {"stage": stage, "input_checkpoint": inp, "output_dir": str(out), "data": list(data),
           "model": TINY if stage == 1 else {},
           "optim": {"lr": 2e-3, "max_steps": steps, "batch_size": batch, "warmup_steps": 2},
           "checkpoint_every": 3, "tensorboard": False, "progress": False, "num_threads": 1, "seed": 0}
    cfg.update(extra)
    return cfg


# ---------------------------------------------------------------- global batch, sampler, config


def test_global_batch_is_split_into_disjoint_shares_the_same_for_any_world_size():
    sampler = MixtureSampler([list(range(100)), list(range(100, 200))], [1, 1], [None, "change"], batch_size=8, seed=3)
    whole = sampler.batch_at(5)
    for world, accum in ((1, 1), (2, 1), (1, 2), (2, 2), (4, 2)):
        shares = [sampler.share(5, rank=r, world_size=world, micro=m, grad_accum=accum)
                  for r in range(world) for m in range(accum)]
        assert [x for share in shares for x in share] == whole
    assert sampler.batch_at(6) != whole
    assert batch_split(32, 8, micro_batch_size=2) == (2, 2) and batch_split(32, 1, micro_batch_size=2) == (2, 16)
    with pytest.raises(ValueError, match="split evenly over 2 process"):
        batch_split(6, 2, grad_accum=2)


def test_deepspeed_auto_keys_come_from_the_backbone_hidden_size():
    model = MedicAD.tiny(**TINY)
    assert not hasattr(model.config, "hidden_size")  # why accelerate cannot fill them itself
    hidden = model.backbone.config.get_text_config().hidden_size
    config = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
              "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                    "stage3_param_persistence_threshold": "auto", "overlap_comm": True}}
    fill_deepspeed_config(config, model, micro_batch=2, grad_accum=4, world_size=8)
    zero = config["zero_optimization"]
    assert zero["reduce_bucket_size"] == hidden * hidden and zero["stage3_param_persistence_threshold"] == 10 * hidden
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["train_batch_size"]) == (2, 4, 64)


class _LossScaler:  # stands in for DeepSpeed's LossScaler object
    def __init__(self) -> None:
        self.cur_scale, self.dynamic = 1.0, False


class _Stage(enum.IntEnum):  # stands in for DeepSpeed's ZeroStageEnum in the round trip below
    gradients = 2


def test_zero2_shaped_optimizer_state_is_checkpointed_per_rank(tmp_path, monkeypatch):
    """DeepSpeed ZeRO-2's optimizer ``state_dict()`` has no ``"state"`` key: the base optimizer's state sits
    one level down beside fp32 partitions, a loss-scaler object and enums."""
    import medic_ad.training.checkpoint as ck

    monkeypatch.setattr(ck, "_TRUSTED_MODULES", ck._TRUSTED_MODULES + (__name__,))
    scaler = _LossScaler()
    def shaped(rank):
        return {"loss_scaler": scaler, "dynamic_loss_scale": False, "overflow": False, "clip_grad": 1.0,
                "base_optimizer_state": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.full((5,), rank),
                                                       "exp_avg_sq": torch.ones(5)}},
                                         "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
                "single_partition_of_fp32_groups": [torch.arange(10.0)[:5] + rank],
                "zero_stage": _Stage.gradients, "group_paddings": [0], "partition_count": [2], "ds_version": "0.19.8"}
    root = tmp_path / "ckpt"
    for rank in (0, 1):
        write_optimizer_shard(root, 4, rank, shaped(rank))
    save_train_state(root, TrainState(step=4, trainable={"w": torch.zeros(2)}, optimizer={}, scheduler={},
                                      extra={}), shards=2)
    for rank in (0, 1):
        state = load_train_state(latest_checkpoint(root), rank=rank)
        got, want = state.optimizer, shaped(rank)
        assert state.optimizer_shards == 2
        assert torch.equal(got["base_optimizer_state"]["state"][0]["exp_avg"], want["base_optimizer_state"]["state"][0]["exp_avg"])
        assert torch.equal(got["single_partition_of_fp32_groups"][0], want["single_partition_of_fp32_groups"][0])
        assert got["zero_stage"] is _Stage.gradients and got["loss_scaler"].cur_scale == 1.0
        assert got["base_optimizer_state"]["param_groups"][0]["betas"] == (0.9, 0.999)
    with pytest.raises(CheckpointError, match="no share for rank 2"):
        load_train_state(latest_checkpoint(root), rank=2)
    tensors, skeleton = flatten_state({"x": scaler})
    skeleton["x"]["__object__"] = "os:system"  # a checkpoint cannot name code outside the trusted modules
    with pytest.raises(CheckpointError, match="outside"):
        unflatten_state(tensors, skeleton)


def test_final_save_writes_gathered_weights_over_partitioned_parameters(tmp_path):
    """Under ZeRO-3 a rank's parameters are empty placeholders outside forward; the final save must write
    the gathered full weights, not those."""
    model = MedicAD.tiny(**TINY)
    full = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.anomaly.parameters():
        p.data = torch.empty(0)
    model.save_pretrained(tmp_path / "broken")  # what a rank-0 save over partitioned parameters writes
    assert load_file(str(tmp_path / "broken" / "medic_ad.safetensors"))["anomaly.soft_prompts"].numel() == 0
    with holding(model, full) as whole:
        whole.save_pretrained(tmp_path / "final")
    assert model.anomaly.soft_prompts.numel() == 0  # placeholders back after the save
    saved = load_file(str(tmp_path / "final" / "medic_ad.safetensors"))
    assert torch.equal(saved["anomaly.soft_prompts"], full["anomaly.soft_prompts"])


def test_dataloader_workers_give_the_loss_curve_of_collating_in_the_loop(tmp_path):
    train(load_config(base=_cfg(tmp_path / "w0", steps=4)))
    train(load_config(base=_cfg(tmp_path / "w1", steps=4, num_workers=1, prefetch_factor=2)))
    a, b = read_metrics(tmp_path / "w0" / "metrics.jsonl"), read_metrics(tmp_path / "w1" / "metrics.jsonl")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


# ---------------------------------------------------------------- two CPU ranks


def _launch(tmp: Path, cfg: dict, *launch: str, resume: bool = False, wait: bool = True):
    path = tmp / f"{Path(cfg['output_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "medic_ad.cli.main", "train",
           "--config", str(path), *(["--resume"] if resume else [])]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
                                start_new_session=True)  # its own group: the kill reaches the ranks too
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


DDP = ("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
       "--dynamo_backend", "no", "--main_process_port", "0")

# One process with batch 2b and two ranks with b each train on the same samples with the same learning
# rates; the losses differ only because each rank normalises its loss by its own token and pixel counts
# (DDP averages the two rank means, one process takes one mean over both halves) and sums in another order.
LOSS_RTOL = 2e-3


def test_two_ddp_ranks_match_one_process_with_the_global_batch(tmp_path):
    train(load_config(base=_cfg(tmp_path / "one")))
    result = _launch(tmp_path, _cfg(tmp_path / "ddp"), *DDP)
    assert result.returncode == 0, result.stderr[-3000:]
    one, ddp = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["lr"] for r in ddp] == [r["lr"] for r in one]
    for a, b in zip(one, ddp):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL), (a, b)
    assert ddp[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-5)  # same weights, same samples
    final = load_file(str(tmp_path / "ddp" / "final" / "medic_ad.safetensors"))
    single = load_file(str(tmp_path / "one" / "final" / "medic_ad.safetensors"))
    assert final.keys() == single.keys()

    # stage 2 on two ranks, one pair per step: the rank without it leaves the Diff Processor unused
    s2 = _cfg(tmp_path / "ddp2", stage=2, inp=str(tmp_path / "ddp" / "final"), data=[DET, PAIRS], steps=3, batch=2)
    result = _launch(tmp_path, s2, *DDP)
    assert result.returncode == 0, result.stderr[-3000:]
    assert MedicAD.from_pretrained(tmp_path / "ddp2" / "final").stage == 2


def test_two_rank_run_killed_midway_resumes_to_the_same_curve(tmp_path):
    full = _cfg(tmp_path / "full", steps=8, checkpoint_every=2)
    assert _launch(tmp_path, full, *DDP).returncode == 0
    reference = read_metrics(tmp_path / "full" / "metrics.jsonl")
    killed = dict(full, output_dir=str(tmp_path / "killed"))
    proc = _launch(tmp_path, killed, *DDP, wait=False)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        found = latest_checkpoint(ckpts)
        if found is not None and load_train_state(found).step >= 4:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= load_train_state(latest_checkpoint(ckpts)).step < 8
    result = _launch(tmp_path, killed, *DDP, resume=True)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(reference, resumed):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6) and b["lr"] == a["lr"], (a, b)


def test_fsdp_launch_on_cpu_ranks_is_refused_not_run_as_ddp(tmp_path):
    result = _launch(tmp_path, _cfg(tmp_path / "fsdp", steps=1),
                     "--config_file", str(REPO / "recipes/accelerate/fsdp.yaml"), "--num_processes", "2",
                     "--mixed_precision", "no", "--main_process_port", "0")
    assert result.returncode != 0
    assert "accelerate runs FSDP only on GPUs" in result.stderr


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (pip install -e .[deepspeed])")
@pytest.mark.parametrize("zero", [2, 3])
def test_deepspeed_zero_on_cpu_ranks_trains_checkpoints_resumes_and_saves(tmp_path, zero):
    launch = ("--config_file", str(REPO / f"recipes/accelerate/deepspeed_zero{zero}.yaml"), "--num_processes", "2",
              "--mixed_precision", "no", "--main_process_port", "0")
    train(load_config(base=_cfg(tmp_path / "one")))
    cfg = _cfg(tmp_path / f"z{zero}", checkpoint_every=3)
    result = _launch(tmp_path, cfg, *launch)
    assert result.returncode == 0, result.stderr[-3000:]
    first = read_metrics(tmp_path / f"z{zero}" / "metrics.jsonl")
    assert (latest_checkpoint(tmp_path / f"z{zero}" / "checkpoints") / "optimizer-rank1.safetensors").is_file()
    result = _launch(tmp_path, cfg, *launch, resume=True)  # steps 4-6 again, from the step-3 checkpoint
    assert result.returncode == 0, result.stderr[-3000:]
    one, ds = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / f"z{zero}" / "metrics.jsonl")
    assert [r["step"] for r in ds] == list(range(1, 7))
    assert [r["loss"] for r in ds] == pytest.approx([r["loss"] for r in first], rel=1e-5, abs=1e-6)
    assert [r["lr"] for r in ds] == [r["lr"] for r in one]
    for a, b in zip(one, ds):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL), (a, b)
    model = MedicAD.from_pretrained(tmp_path / f"z{zero}" / "final")
    assert model.anomaly.soft_prompts.shape[0] > 0


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP needs at least 2 GPUs (accelerate runs it only on GPUs)")
def test_fsdp_on_gpu_ranks_trains_checkpoints_resumes_and_saves(tmp_path):
    """The FSDP path of the loop (gathered checkpoints, resume, gathered final save) where it can run:
    the same proof as DeepSpeed's on CPU ranks, ready for a session that is lent several GPUs."""
    launch = ("--config_file", str(REPO / "recipes/accelerate/fsdp.yaml"), "--num_processes", "2",
              "--mixed_precision", "no", "--main_process_port", "0")
    train(load_config(base=_cfg(tmp_path / "one")))
    cfg = _cfg(tmp_path / "fsdp", checkpoint_every=3)
    result = _launch(tmp_path, cfg, *launch)
    assert result.returncode == 0, result.stderr[-3000:]
    first = read_metrics(tmp_path / "fsdp" / "metrics.jsonl")
    result = _launch(tmp_path, cfg, *launch, resume=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one, fsdp = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "fsdp" / "metrics.jsonl")
    assert [r["loss"] for r in fsdp] == pytest.approx([r["loss"] for r in first], rel=1e-4, abs=1e-5)
    assert [r["lr"] for r in fsdp] == [r["lr"] for r in one]
    model = MedicAD.from_pretrained(tmp_path / "fsdp" / "final")
    assert model.anomaly.soft_prompts.shape[0] > 0
