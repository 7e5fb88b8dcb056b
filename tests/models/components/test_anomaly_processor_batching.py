"""The Anomaly Processor maps images that share a patch grid in one batch: the same maps and tokens as
one image at a time, whatever the mix of grid sizes."""

from __future__ import annotations

import pytest
import torch

from medic_ad.models.components.anomaly_processor import AnomalyProcessor


def _processor() -> AnomalyProcessor:
    torch.manual_seed(0)
    return AnomalyProcessor(vision_dim=16, llm_dim=16, num_layers=2, prompt_layers=2, anomaly_dim=8,
                            qformer_dim=8, qformer_heads=2, qformer_layers=1).eval()


def test_batch_by_grid_matches_one_image_at_a_time():
    proc = _processor()
    grids = [(12, 12), (8, 10), (12, 12), (8, 10), (6, 6)]  # two shared grids and a lone one, interleaved
    layers = [[torch.randn(h, w, 16) for _ in range(2)] for h, w in grids]
    projected = [torch.randn(h * w // 4, 16) for h, w in grids]
    with torch.no_grad():
        tokens, maps = proc(layers, projected)
        for i, (image_layers, fp) in enumerate(zip(layers, projected)):
            one_tokens, (one,) = proc([image_layers], [fp])
            assert maps[i].anomaly.shape == grids[i]
            for name in ("abnormal", "normal", "anomaly", "abnormal_logits", "normal_logits", "modulated"):
                assert torch.allclose(getattr(maps[i], name), getattr(one, name), atol=1e-5), name
            assert torch.allclose(tokens[i], one_tokens[0], atol=1e-5)


def test_compute_maps_batch_is_compute_maps_per_image():
    proc = _processor()
    batch = torch.randn(3, 2, 6, 6, 16)
    with torch.no_grad():
        maps = proc.compute_maps_batch(batch)
        for image, m in zip(batch, maps):
            assert torch.allclose(proc.compute_maps(list(image)).modulated, m.modulated, atol=1e-6)


def test_wrong_number_of_tapped_layers_is_named():
    proc = _processor()
    with pytest.raises(ValueError, match="expected 2 tapped layers, got 3"):
        proc([[torch.randn(6, 6, 16)] * 3], [torch.randn(9, 16)])
