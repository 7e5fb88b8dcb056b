"""Calibration of the choice offsets: the fit, the decoding it changes, and stage 2 writing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medic_ad.models.decoding import ConstrainedChoice
from medic_ad.models.medic_ad import MedicAD, choice_key
from medic_ad.training import load_config, train
from medic_ad.training.calibration import fit_choice_bias

SYNTH_DET = {"name": "synthetic", "task": "detection", "options": {"kind": "detection", "n": 32, "size": 56}}
SYNTH_PAIRS = {"name": "synthetic", "task": "change", "options": {"kind": "pairs", "n": 24, "size": 56}}


def test_fit_undoes_a_shift_that_collapses_the_answers():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 100)
    log_probs = 1.5 * np.eye(3)[labels] + rng.normal(0, 0.5, (300, 3))
    shifted = log_probs + np.array([0.0, 3.0, 0.0])  # every case now answers option 1
    assert (shifted.argmax(1) == 1).mean() > 0.9
    bias = fit_choice_bias(shifted, labels)
    assert bias[0] == 0.0 and -3.6 < bias[1] < -2.4
    assert ((shifted + bias).argmax(1) == labels).mean() > 0.9


def test_fit_keeps_a_balanced_model_near_zero():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 150)
    log_probs = 3.0 * np.eye(2)[labels] + rng.normal(0, 0.3, (300, 2))  # separable with no offset
    assert fit_choice_bias(log_probs, labels) == [0.0, 0.0]


def test_offsets_move_the_scores_and_the_choice_together():
    logits = torch.tensor([[0.0, 2.0, 1.0, 0.0]])
    plain, shifted = ConstrainedChoice([1, 2]), ConstrainedChoice([1, 2], bias=[0.0, 1.5])
    for choice in (plain, shifted):
        choice(torch.zeros(1, 3, dtype=torch.long), logits.clone())
    assert plain.chosen.item() == 0 and shifted.chosen.item() == 1
    assert torch.allclose(shifted.probs, torch.softmax(torch.tensor([[2.0, 2.5]]), -1))


def _cfg(tmp: Path, stage: int, inp: str, data: list, **extra) -> dict:
    cfg = {"stage": stage, "input_checkpoint": inp, "output_dir": str(tmp / f"s{stage}"), "data": data,
           "optim": {"lr": 2e-3, "max_steps": 3, "batch_size": 2, "warmup_steps": 1},
           "checkpoint_every": 0, "tensorboard": False, "progress": False, "num_threads": 1, "seed": 0}
    cfg.update(extra)
    return cfg


def test_stage2_fits_the_offsets_on_fresh_cases_and_the_checkpoint_decides_with_them(tmp_path):
    modules = {"anomaly_dim": 32, "qformer_dim": 32, "qformer_layers": 1, "heatmap_dim": 16, "lora_r": 4}
    s1 = train(load_config(base=_cfg(tmp_path, 1, "tiny", [SYNTH_DET], model=modules)))
    s2 = train(load_config(base=_cfg(tmp_path, 2, str(s1.output), [SYNTH_PAIRS, SYNTH_DET], calibration=12)))
    model = MedicAD.from_pretrained(s2.output)
    assert set(model.config.choice_bias) == {choice_key(["Yes.", "No."]),
                                             choice_key(["A: No significant change", "B: Improved", "C: Worsened"])}
    from medic_ad.models.checkpoint import read_checkpoint_meta

    report = read_checkpoint_meta(s2.output)["calibration"]
    assert report["change"]["n"] == 12 and report["detection"]["n"] == 12
    assert report["change"]["balanced_accuracy_after"] >= report["change"]["balanced_accuracy_before"]
    # stage 3 carries the offsets on
    s3 = train(load_config(base=_cfg(tmp_path, 3, str(s2.output), [SYNTH_DET])))
    assert MedicAD.from_pretrained(s3.output).config.choice_bias == model.config.choice_bias
    # and they are what decides: the answer follows the offset probabilities
    image = np.random.default_rng(0).random((56, 56)).astype(np.float32)
    key = choice_key(["Yes.", "No."])
    model.config.choice_bias[key] = [30.0, 0.0]
    assert model.detect(image).abnormal
    model.config.choice_bias[key] = [-30.0, 0.0]
    assert not model.detect(image).abnormal
