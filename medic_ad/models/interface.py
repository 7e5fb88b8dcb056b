"""The one model interface: what MEDIC-AD, the bare Qwen2.5-VL baseline and the test dummy implement.

A model implements two batch primitives (lm-evaluation-harness style), and the user API
(``detect`` / ``compare`` / ``explain``) is written once on top of them:

* :meth:`MedicalVLM.choose` — multiple choice: the options scored by their first token at the first
  answer position, the chosen option as the answer, plus what the same forward computed per image
  (anomaly maps; heatmaps on request);
* :meth:`MedicalVLM.answer` — free text answers (VQA).

Models register by decorator (:func:`register_model`); :func:`get_model` finds one by name, importing
the built-in ones on first use so that ``import medic_ad`` stays light.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np

from medic_ad.data.templates import (CHANGE_OF_LETTER, CHANGE_OPTIONS, DETECTION_ANSWERS, DETECTION_PROMPT,
                                     ChatExample, change_prompt, choice_answer)
from medic_ad.models.results import Comparison, Detection, Explanation

__all__ = ["Choice", "MedicalVLM", "DETECTION_OPTIONS", "CHANGE_LETTERS", "get_model", "load_pil", "model_names",
           "register_model"]

#: The detection question's options, the abnormal one first (its probability is the score).
DETECTION_OPTIONS = (DETECTION_ANSWERS["abnormal"], DETECTION_ANSWERS["normal"])
#: The change question's option letters in the order the options are written.
CHANGE_LETTERS = tuple(CHANGE_OPTIONS)


@dataclass
class Choice:
    """One example's multiple-choice result.

    answer: the answer text (the chosen option verbatim when decoding was forced).
    chosen: index of the chosen option. probs: one probability per option (they sum to 1).
    anomaly_maps: per image of the example, the fused anomaly map in [0, 1] at that image's H × W
        (None for a model without one). heatmaps: likewise, the heatmap, when asked for.
    """

    answer: str
    chosen: int
    probs: list[float]
    anomaly_maps: list[np.ndarray] | None = None
    heatmaps: list[np.ndarray] | None = None


class MedicalVLM(ABC):
    """A medical vision-language model as the harness, the service and the CLI use it."""

    #: registry name, set by :func:`register_model`
    name: ClassVar[str] = ""
    #: whether :meth:`choose` can return heatmaps (and so :meth:`explain` and grounding work)
    has_heatmaps: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, *, device: str = "cpu", dtype: Any = "auto") -> "MedicalVLM":
        """The model saved in folder ``path``, ready for inference."""

    def for_inference(self) -> "MedicalVLM":
        """Prepare for inference only (e.g. fold adapters into the weights); returns the model."""
        return self

    @abstractmethod
    def choose(self, examples: Sequence[ChatExample], options: Sequence[str], *, max_new_tokens: int = 8,
               force: bool = True, heatmaps: bool = False) -> list[Choice]:
        """Score ``options`` (whole answers, e.g. ``"Yes."`` / ``"No."``) for each example, one batch.

        The probabilities are a softmax over the options' first tokens at the first answer position.
        ``force``: the answer is the chosen option verbatim (cut at ``max_new_tokens``); otherwise the
        model answers freely and only the probabilities are read. ``heatmaps`` needs ``has_heatmaps``.
        """

    @abstractmethod
    def answer(self, examples: Sequence[ChatExample], *, max_new_tokens: int = 32) -> list[str]:
        """Greedy free-text answers, one batch."""

    # ------------------------------------------------------------------ the user API
    def detect(self, image: Any, *, max_new_tokens: int = 8, batch_size: int = 8) -> Detection | list[Detection]:
        """Is there any abnormality? ``score`` = P(Yes) against P(No) of the first answer token; the
        answer is the option the score chose ("Yes." / "No."), so ``score >= 0.5`` ⇔ ``abnormal``.

        Takes a path, PIL image, array or MedicalImage, or a list of them (then returns a list).
        """
        items, single = as_list(image)
        rows = self._chunked([ChatExample([x], DETECTION_PROMPT) for x in items], DETECTION_OPTIONS,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, heatmaps=False)
        out = [Detection(answer=r.answer, abnormal=r.chosen == 0, score=r.probs[0],
                         anomaly_map=None if r.anomaly_maps is None else r.anomaly_maps[0]) for r in rows]
        return out[0] if single else out

    def explain(self, image: Any, *, max_new_tokens: int = 8, batch_size: int = 8) -> Explanation | list[Explanation]:
        """:meth:`detect` and the heatmap (float32 in [0, 1] at the input's H × W) from the same forward pass."""
        if not self.has_heatmaps:
            raise ValueError(f"model {self.name or type(self).__name__!r} has no heatmap decoder; "
                             "grounding needs a MEDIC-AD checkpoint")
        items, single = as_list(image)
        rows = self._chunked([ChatExample([x], DETECTION_PROMPT) for x in items], DETECTION_OPTIONS,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, heatmaps=True)
        out = [Explanation(answer=r.answer, abnormal=r.chosen == 0, score=r.probs[0],
                           anomaly_map=None if r.anomaly_maps is None else r.anomaly_maps[0],
                           heatmap=r.heatmaps[0]) for r in rows]
        return out[0] if single else out

    def compare(self, prior: Any, current: Any, *, region: str | None = None, max_new_tokens: int = 8,
                batch_size: int = 8) -> Comparison | list[Comparison]:
        """Worsened / improved / no change between a prior and a current study (MMXU choice A/B/C); the
        answer is the most probable option verbatim ("C: Worsened").

        ``prior`` and ``current`` are one study each, or two lists of equal length (then a list comes back).
        """
        priors, single = as_list(prior)
        currents, _ = as_list(current)
        if len(priors) != len(currents):
            raise ValueError(f"{len(priors)} prior studies but {len(currents)} current ones")
        options = [choice_answer(letter, CHANGE_OPTIONS) for letter in CHANGE_LETTERS]
        rows = self._chunked([ChatExample([p, c], change_prompt(region)) for p, c in zip(priors, currents)],
                             options, max_new_tokens=max_new_tokens, batch_size=batch_size, heatmaps=False)
        out = []
        for r in rows:
            maps = r.anomaly_maps or [None, None]
            out.append(Comparison(answer=r.answer, label=CHANGE_OF_LETTER[CHANGE_LETTERS[r.chosen]],
                                  probs={CHANGE_OF_LETTER[k]: p for k, p in zip(CHANGE_LETTERS, r.probs)},
                                  prior_map=maps[0], current_map=maps[1]))
        return out[0] if single else out

    def _chunked(self, examples: list[ChatExample], options: Sequence[str], *, max_new_tokens: int,
                 batch_size: int, heatmaps: bool) -> list[Choice]:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        # every input is read (and refused with its own message) before any compute
        examples = [ChatExample([load_pil(x, role=_role(len(ex.images), i)) for i, x in enumerate(ex.images)],
                                ex.question) for ex in examples]
        rows: list[Choice] = []
        for start in range(0, len(examples), batch_size):
            rows += self.choose(examples[start:start + batch_size], options, max_new_tokens=max_new_tokens,
                                heatmaps=heatmaps)
        return rows


def _role(n_images: int, index: int) -> str:
    return "image" if n_images == 1 else ("prior", "current")[index]


def as_list(x: Any) -> tuple[list, bool]:
    """``(items, single)``: a list as it is, anything else as a list of one."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("no images given")
        return list(x), False
    return [x], True


def load_pil(x: Any, *, role: str = "image"):
    """RGB PIL image from a path, PIL image, array or MedicalImage; one clear error before any compute."""
    from PIL import Image

    from medic_ad.data.io import load_image_any

    if x is None:
        raise ValueError(f"{role}: missing (None)")
    if isinstance(x, Image.Image) and x.mode == "RGB":
        return x
    return load_image_any(x).to_pil()


# ---------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[MedicalVLM]] = {}
# Modules whose classes register themselves; imported on the first look-up.
_BUILTIN = ("medic_ad.models.medic_ad", "medic_ad.models.baseline", "medic_ad.models.dummy")
M = TypeVar("M", bound=type[MedicalVLM])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`MedicalVLM` implementation under ``name``."""

    def add(cls: M) -> M:
        if not (inspect.isclass(cls) and issubclass(cls, MedicalVLM)):
            raise TypeError(f"model {name!r}: {cls!r} does not implement MedicalVLM")
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise TypeError(f"model {name!r}: {cls.__name__} leaves abstract: {missing}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def _load_builtins() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)


def get_model(name: str) -> type[MedicalVLM]:
    """The model class registered under ``name``."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)
