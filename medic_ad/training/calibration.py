"""Calibration of the multiple-choice decisions after the last stage that trains the language model.

``detect`` and ``compare`` answer with the option whose first token scores highest. How the scores
of the options sit against each other can shift with the run (seed, machine, step count) while the
ranking of the cases stays informative: a compare head may rank worsened pairs above improved ones
and still put the no-change pairs all on one side of a fixed cut. So after stage 2 the recipe draws
fresh labelled cases from its own training sources (synthetic and pair generators re-seeded, so the
pairs are new; training images only, never an evaluation split), reads the options' log
probabilities with no offset, and fits one additive offset per option (the first held at 0) that
maximises the balanced accuracy (mean recall over the classes). The offsets go into the
checkpoint's config (``choice_bias``) and every later ``choose`` adds them to the options' logits,
so the service, the evaluation and the study job all decide alike.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medic_ad.data.schema import Sample
from medic_ad.data.templates import (CHANGE_LETTER, CHANGE_OPTIONS, DETECTION_PROMPT, ChatExample, change_prompt,
                                     choice_answer)
from medic_ad.models.interface import CHANGE_LETTERS, DETECTION_OPTIONS
from medic_ad.models.medic_ad import MedicAD, choice_key

__all__ = ["fit_choice_bias", "calibrate_choices"]

logger = logging.getLogger(__name__)

# Re-seeding offset for the calibration draw: generated pairs and images differ from the ones trained on.
CALIBRATION_SEED_SHIFT = 7919


def fit_choice_bias(log_probs: np.ndarray, labels: np.ndarray, *, span: float = 4.0, step: float = 0.1) -> list[float]:
    """Offsets (first 0) added to each option's log probability that maximise balanced accuracy.

    A grid over ``[-span, span]`` per free option; among equally good offsets the smallest (L2) wins,
    so a model that is already balanced keeps offsets near 0.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels)
    n, k = log_probs.shape
    classes = [c for c in range(k) if (labels == c).any()]
    if len(classes) < 2:
        raise ValueError("calibration needs cases of at least two classes")
    grid = np.arange(-span, span + step / 2, step)
    best, best_key = [0.0] * k, None
    for free in itertools.product(grid, repeat=k - 1):
        bias = np.array((0.0, *free))
        pred = (log_probs + bias).argmax(1)
        recall = np.mean([(pred[labels == c] == c).mean() for c in classes])
        key = (round(float(recall), 9), -float(np.square(bias).sum()))
        if best_key is None or key > best_key:
            best, best_key = bias.tolist(), key
    return [round(b, 4) for b in best]


def _balanced_accuracy(log_probs: np.ndarray, labels: np.ndarray, bias: Sequence[float]) -> float:
    pred = (log_probs + np.asarray(bias)).argmax(1)
    return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))


def _calibration_draw(cfg, task: str, n: int, holdout) -> list[Sample]:
    """``n`` labelled cases of ``task`` from the config's training sources, re-seeded, drawn by weight."""
    from medic_ad.training.mixture import load_source

    sources, weights = [], []
    for source in cfg.data:
        if source.task != task:
            continue
        options = dict(source.options)
        if "seed" in options or source.name in ("synthetic", "change_pairs"):
            options["seed"] = int(options.get("seed", 0)) + CALIBRATION_SEED_SHIFT
        sources.append(load_source(dataclasses.replace(source, options=options), holdout))
        weights.append(source.weight)
    if not sources:
        return []
    rng = np.random.default_rng(cfg.seed + CALIBRATION_SEED_SHIFT)
    p = np.asarray(weights, dtype=float) / sum(weights)
    picks = rng.choice(len(sources), size=n, p=p)
    return [sources[s][int(rng.integers(len(sources[s])))] for s in picks]


@torch.no_grad()
def _log_probs(model: MedicAD, examples: list[ChatExample], options: Sequence[str], batch: int) -> np.ndarray:
    rows = []
    for start in range(0, len(examples), batch):
        rows += model.choose(examples[start:start + batch], options, max_new_tokens=1)
    return np.log(np.clip(np.array([r.probs for r in rows], dtype=np.float64), 1e-12, None))


def calibrate_choices(model: MedicAD, cfg, *, n: int, batch: int = 16) -> dict[str, Any]:
    """Fit ``model.config.choice_bias`` for detection and change on ``n`` fresh training cases each.

    Returns what was fitted and the balanced accuracy on the calibration cases before and after.
    """
    was_training = model.training
    model.eval()
    model.config.choice_bias = {}
    report: dict[str, Any] = {}
    change_options = [choice_answer(letter, CHANGE_OPTIONS) for letter in CHANGE_LETTERS]
    tasks = {
        "detection": (list(DETECTION_OPTIONS),
                      lambda s: ChatExample([s.images[0]], DETECTION_PROMPT),
                      lambda s: None if s.label is None else (0 if s.label == "abnormal" else 1)),
        "change": (change_options,
                   lambda s: ChatExample(list(s.images), change_prompt(s.region)),
                   lambda s: None if s.change is None else CHANGE_LETTERS.index(CHANGE_LETTER[s.change])),
    }
    from medic_ad.training.mixture import load_holdout

    holdout = load_holdout(cfg.holdout) if cfg.holdout else None
    for task, (options, example, label_of) in tasks.items():
        cases = [s for s in _calibration_draw(cfg, task, n, holdout) if label_of(s) is not None]
        labels = np.array([label_of(s) for s in cases])
        if len(cases) < 2 or len(np.unique(labels)) < 2:
            continue
        log_probs = _log_probs(model, [example(s) for s in cases], options, batch)
        bias = fit_choice_bias(log_probs, labels)
        model.config.choice_bias[choice_key(options)] = bias
        report[task] = {"n": len(cases), "bias": bias,
                        "balanced_accuracy_before": _balanced_accuracy(log_probs, labels, [0.0] * len(options)),
                        "balanced_accuracy_after": _balanced_accuracy(log_probs, labels, bias)}
        logger.info("calibration %s: offsets %s, balanced accuracy %.3f → %.3f on %d cases", task, bias,
                    report[task]["balanced_accuracy_before"], report[task]["balanced_accuracy_after"], len(cases))
    model.train(was_training)
    return report
