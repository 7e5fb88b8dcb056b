"""One request, one forward: the service answers from the maps its one model call computed."""

from __future__ import annotations

import pytest


@pytest.fixture
def counted(service, count_vision_passes):
    return count_vision_passes(service.model)


def test_explain_runs_the_vision_tower_once(service, counted, br35h):
    image = service.load(br35h[0], name="image")
    result = service.explain(image)
    assert counted["vision"] == 1
    assert result.heatmap.shape == image.pixels.shape[:2] and result.anomaly_map.shape == image.pixels.shape[:2]
    assert 0.0 <= result.score <= 1.0 and result.image["height"] == image.pixels.shape[0]


def test_compare_runs_the_vision_tower_once_for_both_studies(service, counted, cxr_pair):
    prior, current = (service.load(p, name=n) for p, n in zip(cxr_pair, ("prior", "current")))
    result = service.compare(prior, current)
    assert counted["vision"] == 1
    assert result.prior_map.shape == prior.pixels.shape[:2] and result.current_map.shape == current.pixels.shape[:2]
    assert result.change.shape == current.pixels.shape[:2]
    assert set(result.to_dict()) == {"label", "answer", "probs", "change_map", "prior", "current"}
