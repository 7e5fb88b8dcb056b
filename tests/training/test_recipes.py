"""Recipes run for real: the stage chain, resume after a kill, atomic checkpoints, bad input."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medic_ad.models.checkpoint import read_checkpoint_meta
from medic_ad.models.medic_ad import MedicAD
from medic_ad.training import load_config, train
from medic_ad.training.checkpoint import CheckpointError, latest_checkpoint, load_train_state
from medic_ad.training.loop import read_metrics

SYNTH_DET = {"name": "synthetic", "task": "detection", "options": {"kind": "detection", "n": 32, "size": 56}}
SYNTH_PAIRS = {"name": "synthetic", "task": "change", "options": {"kind": "pairs", "n": 24, "size": 56}}


def _cfg(tmp: Path, stage: int, inp: str, data: list, steps: int = 6, **extra) -> dict:
    cfg = {"stage": stage, "input_checkpoint": inp, "output_dir": str(tmp / f"s{stage}"), "data": data,
           "optim": {"lr": 2e-3, "max_steps": steps, "batch_size": 2, "warmup_steps": 1},
           "checkpoint_every": 3, "tensorboard": False, "progress": False, "num_threads": 1, "seed": 0}
    cfg.update(extra)
    return cfg


def test_stage_chain_runs_and_loss_goes_down(tmp_path):
    base = {"vision_hidden_size": 32, "vision_intermediate_size": 64, "text_hidden_size": 64}
    s0 = train(load_config(base=_cfg(tmp_path, 0, "tiny", [dict(SYNTH_DET, caption="synthetic phantom", task=None)],
                                     steps=12, model=base)))
    assert (s0.output / "config.json").is_file()
    curve = [r["loss"] for r in read_metrics(tmp_path / "s0" / "metrics.jsonl")]
    assert sum(curve[-3:]) < sum(curve[:3])
    tiny_modules = {"anomaly_dim": 32, "qformer_dim": 32, "qformer_layers": 1, "heatmap_dim": 16, "lora_r": 4}
    s1 = train(load_config(base=_cfg(tmp_path, 1, str(s0.output), [SYNTH_DET], model=tiny_modules)))
    assert read_checkpoint_meta(s1.output)["stage"] == 1
    s2 = train(load_config(base=_cfg(tmp_path, 2, str(s1.output), [SYNTH_PAIRS])))
    s3 = train(load_config(base=_cfg(tmp_path, 3, str(s2.output), [SYNTH_DET])))
    model = MedicAD.from_pretrained(s3.output)
    assert model.stage == 3 and model.config.anomaly_dim == 32
    # each stage changed exactly its own modules
    m1, m2 = MedicAD.from_pretrained(s1.output), MedicAD.from_pretrained(s2.output)
    sd1, sd2, sd3 = m1.module_state_dict(), m2.module_state_dict(), model.module_state_dict()
    changed_12 = {k.split(".")[0] for k in sd1 if not (sd1[k] == sd2[k]).all()}
    changed_23 = {k.split(".")[0] for k in sd2 if not (sd2[k] == sd3[k]).all()}
    assert changed_12 == {"diff", "backbone"} and changed_23 == {"heatmap"}
    # wrong-stage input: one readable error
    with pytest.raises(ValueError, match="stage 3 needs a stage-2 checkpoint"):
        train(load_config(base=_cfg(tmp_path, 3, str(s1.output), [SYNTH_DET])))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(load_config(base=_cfg(tmp_path, 2, str(tmp_path / "missing"), [SYNTH_PAIRS])))
    with pytest.raises(ValueError, match="already a MEDIC-AD checkpoint"):
        train(load_config(base=_cfg(tmp_path, 1, str(s1.output), [SYNTH_DET])))


def _write(tmp: Path, cfg: dict) -> Path:
    path = tmp / f"cfg-{cfg['output_dir'].rsplit('/', 1)[-1]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_killed_run_resumes_with_the_same_loss_curve(tmp_path):
    data = [SYNTH_DET]
    model = {"anomaly_dim": 32, "qformer_dim": 32, "qformer_layers": 1, "heatmap_dim": 16, "lora_r": 4}
    full = _cfg(tmp_path, 1, "tiny", data, steps=10, model=model, output_dir=str(tmp_path / "full"),
                checkpoint_every=2)
    train(load_config(base=full))
    reference = read_metrics(tmp_path / "full" / "metrics.jsonl")

    killed = dict(full, output_dir=str(tmp_path / "killed"))
    path = _write(tmp_path, killed)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "medic_ad.cli.main", "train", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = latest_checkpoint(ckpts)
        if found is not None and load_train_state(found).step >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = load_train_state(latest_checkpoint(ckpts)).step
    assert 2 <= resumed_from < 10
    assert not (tmp_path / "killed" / "final").exists()
    result = subprocess.run([sys.executable, "-m", "medic_ad.cli.main", "train", "--config", str(path), "--resume"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = read_metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 11))
    for a, b in zip(reference, resumed):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)
        assert a["lr"] == pytest.approx(b["lr"])


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import medic_ad.training.checkpoint as ck

    model = {"anomaly_dim": 32, "qformer_dim": 32, "qformer_layers": 1, "heatmap_dim": 16, "lora_r": 4}
    cfg = _cfg(tmp_path, 1, "tiny", [SYNTH_DET], steps=8, model=model, checkpoint_every=2)
    real_save = ck.save_file
    calls = {"n": 0}

    def flaky(tensors, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # the second checkpoint's first file: half written, then the disk is full
            Path(filename).write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *a, **k)

    monkeypatch.setattr(ck, "save_file", flaky)
    with pytest.raises(CheckpointError, match="disk full.*step-00000002 is intact"):
        train(load_config(base=cfg))
    root = tmp_path / "s1" / "checkpoints"
    assert latest_checkpoint(root).name == "step-00000002"
    assert load_train_state(latest_checkpoint(root)).step == 2
    assert [p.name for p in root.iterdir() if p.name.startswith(".writing")] == []


def test_empty_dataset_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    (empty / "yes").mkdir(parents=True)
    (empty / "no").mkdir()
    cfg = _cfg(tmp_path, 1, "tiny", [{"name": "image_folder", "root": str(empty), "task": "detection"}])
    with pytest.raises(ValueError, match="empty"):
        train(load_config(base=cfg))
