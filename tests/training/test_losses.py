"""Anomaly-map supervision: what each map is asked to say about a patch a lesion partly covers."""

from __future__ import annotations

import torch

from medic_ad.models.components.anomaly_processor import AnomalyMaps
from medic_ad.training.losses import anomaly_map_loss


def _maps(abnormal_logits: torch.Tensor, normal_logits: torch.Tensor) -> AnomalyMaps:
    abnormal, normal = torch.sigmoid(abnormal_logits), torch.sigmoid(normal_logits)
    return AnomalyMaps(abnormal=abnormal, normal=normal, anomaly=(abnormal - normal).mean(0),
                       abnormal_logits=abnormal_logits, normal_logits=normal_logits,
                       modulated=torch.zeros(2, 2, 4))


def test_normal_map_learns_the_normal_share_and_abnormal_map_marks_a_quarter_covered_patch():
    # a 28 × 28 image on a 2 × 2 patch grid; the lesion covers 0.43 of the top-left patch only
    mask = torch.zeros(28, 28)
    mask[:7, :12] = 1.0  # 7 × 12 = 84 of the patch's 196 pixels
    share = 84 / 196
    normal_logits = torch.full((1, 2, 2), 8.0)
    normal_logits[0, 0, 0] = torch.logit(torch.tensor(1 - share))
    normal_logits.requires_grad_(True)
    abnormal_logits = torch.zeros(1, 2, 2, requires_grad=True)
    loss = anomaly_map_loss([_maps(abnormal_logits, normal_logits)], [mask], torch.tensor([1]))
    loss.backward()
    # the normal map sits at its target 1 − share: no pull on that patch
    assert abs(normal_logits.grad[0, 0, 0].item()) < 1e-6
    # the abnormal map is pushed up on the partly covered patch (≥ a quarter → target 1), down elsewhere
    assert abnormal_logits.grad[0, 0, 0] < 0
    assert torch.all(abnormal_logits.grad[0].flatten()[1:] > 0)


def test_normal_image_without_mask_is_normal_everywhere():
    abnormal_logits = torch.zeros(2, 3, 3, requires_grad=True)
    normal_logits = torch.zeros(2, 3, 3, requires_grad=True)
    loss = anomaly_map_loss([_maps(abnormal_logits, normal_logits)], [None], torch.tensor([0]))
    loss.backward()
    assert torch.all(abnormal_logits.grad > 0) and torch.all(normal_logits.grad < 0)


def test_nothing_supervises_an_unlabelled_image_without_mask():
    maps = _maps(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    assert anomaly_map_loss([maps], [None], torch.tensor([-1])) is None
