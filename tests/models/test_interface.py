"""One model interface: the registry checks what registers, and MEDIC-AD, the baseline and the dummy share it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medic_ad.data.templates import ChatExample
from medic_ad.models.interface import (DETECTION_OPTIONS, Choice, MedicalVLM, get_model, model_names,
                                       register_model)
from medic_ad.models.results import Comparison, Detection, Explanation


def _grey(value: float, size=(40, 32)) -> Image.Image:
    return Image.fromarray(np.full(size, int(value * 255), np.uint8)).convert("RGB")


def test_builtin_models_are_registered_by_name():
    assert {"medic_ad", "baseline", "dummy"} <= set(model_names())
    from medic_ad.models.baseline import BaselineVLM
    from medic_ad.models.dummy import DummyModel
    from medic_ad.models.medic_ad import MedicAD

    assert get_model("medic_ad") is MedicAD and get_model("baseline") is BaselineVLM and get_model("dummy") is DummyModel
    assert MedicAD.has_heatmaps and DummyModel.has_heatmaps and not BaselineVLM.has_heatmaps
    with pytest.raises(ValueError, match="unknown model 'nope'.*baseline"):
        get_model("nope")


def test_registry_refuses_what_does_not_implement_the_interface():
    class NotAModel:
        pass

    with pytest.raises(TypeError, match="does not implement MedicalVLM"):
        register_model("not_a_model")(NotAModel)

    class Half(MedicalVLM):
        @classmethod
        def load(cls, path, *, device="cpu", dtype="auto"):
            return cls()

    with pytest.raises(TypeError, match="leaves abstract: answer, choose"):
        register_model("half")(Half)
    with pytest.raises(ValueError, match="already registered"):
        register_model("dummy")(type("Other", (get_model("dummy"),), {}))
    assert "half" not in model_names() and "not_a_model" not in model_names()


def test_the_user_api_is_written_once_on_choose():
    """The dummy implements only ``choose``/``answer``; detect/compare/explain come from the interface."""
    model = get_model("dummy")()
    d = model.detect([_grey(0.8), _grey(0.2)], batch_size=1)
    assert [type(r) for r in d] == [Detection, Detection] and model.calls == 2
    assert [r.abnormal for r in d] == [True, False] and [r.answer for r in d] == ["Yes.", "No."]
    assert d[0].score == pytest.approx(0.8, abs=0.01) and d[0].anomaly_map.shape == (40, 32)
    c = model.compare(_grey(0.2), _grey(0.8))
    assert isinstance(c, Comparison) and c.label == "worsened" and c.answer == "C: Worsened"
    assert set(c.probs) == {"worsened", "improved", "no change"} and sum(c.probs.values()) == pytest.approx(1.0)
    assert c.change.shape == (40, 32) and c.change.max() == 1.0
    e = model.explain(_grey(0.8))
    assert isinstance(e, Explanation) and e.heatmap.shape == (40, 32) and e.score == d[0].score
    with pytest.raises(ValueError, match="prior: missing"):
        model.compare(None, _grey(0.5))


def test_medic_ad_and_the_baseline_answer_through_the_same_interface(tiny_model, tmp_path):
    from medic_ad.models.baseline import BaselineVLM

    baseline = BaselineVLM.tiny(seed=0)
    examples = [ChatExample([_grey(0.3)], "Is there any abnormality in this image?"),
                ChatExample([_grey(0.7, (56, 48))], "Is there any abnormality in this image?")]
    for model in (tiny_model, baseline):
        assert isinstance(model, MedicalVLM)
        rows = model.choose(examples, DETECTION_OPTIONS, max_new_tokens=4)
        assert all(isinstance(r, Choice) for r in rows)
        for r in rows:
            assert r.answer == DETECTION_OPTIONS[r.chosen] and sum(r.probs) == pytest.approx(1.0, abs=1e-5)
        assert len(model.answer(examples, max_new_tokens=2)) == 2
    assert [m.shape for r in tiny_model.choose(examples, DETECTION_OPTIONS) for m in r.anomaly_maps] == \
        [(40, 32), (56, 48)]
    assert baseline.choose(examples, DETECTION_OPTIONS)[0].anomaly_maps is None
    with pytest.raises(ValueError, match="no heatmap decoder"):
        baseline.explain(_grey(0.5))
    with pytest.raises(ValueError, match="distinct tokens"):
        tiny_model.choose(examples, ["Yes.", "Yes, it is."])
