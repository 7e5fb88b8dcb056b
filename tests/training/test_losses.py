"""Anomaly-map supervision: what each map is asked to say about a patch a lesion partly covers."""

from __future__ import annotations

import math

import pytest
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


def test_heatmap_bce_weights_lesion_pixels_by_the_background_ratio():
    from medic_ad.training.losses import heatmap_loss

    mask = torch.zeros(20, 20)
    mask[:2, :2] = 1  # 4 lesion pixels, 396 background
    logits = torch.zeros(20, 20)  # p = 0.5 everywhere: every pixel's BCE is log 2
    labels = torch.tensor([1])
    plain = heatmap_loss([logits], [mask], labels, dice_weight=0.0, pos_weight_power=0.0)
    weighted = heatmap_loss([logits], [mask], labels, dice_weight=0.0, pos_weight_power=0.5)
    assert plain.item() == pytest.approx(math.log(2))
    # lesion pixels count sqrt(396 / 4) = 9.95 times
    assert weighted.item() == pytest.approx(math.log(2) * (396 + 4 * math.sqrt(99)) / 400, rel=1e-5)
    # an empty target is not reweighted
    empty = heatmap_loss([logits], [None], torch.tensor([0]), dice_weight=0.0, pos_weight_power=0.5)
    assert empty.item() == pytest.approx(math.log(2))


def test_lesion_share_loss_area_term_compares_log_lesion_areas():
    from medic_ad.training.losses import lesion_share_loss

    fraction = torch.zeros(4, 4)
    fraction[0, :2] = 1.0  # two whole patches of lesion
    def loss_for(share: torch.Tensor) -> tuple[float, float]:
        logits = torch.logit((1 - share).clamp(1e-6, 1 - 1e-6))[None]
        lesion = (fraction > 0).float()
        weight = 1.0 + lesion * (14 / 2) ** 0.5
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, (1 - fraction)[None], weight=weight[None])
        return lesion_share_loss(_maps(torch.zeros_like(logits), logits), fraction).item(), bce.item()

    total, bce = loss_for(fraction)  # the right share everywhere: no area error
    assert total == pytest.approx(bce, abs=1e-4)
    total, bce = loss_for(fraction * 0.5 + 0.25 * (fraction == 0))  # area 1 + 14 × 0.25 = 4.5 patches, not 2
    err = math.log(5.0 / 2.5)  # |log(4.5 + 0.5) − log(2 + 0.5)| > beta: the linear part of smooth L1
    assert total - bce == pytest.approx(err - 0.25, abs=1e-4)


def test_share_weight_zero_is_the_plain_map_loss_and_one_adds_the_share_loss():
    from medic_ad.training.losses import lesion_share_loss

    torch.manual_seed(0)
    abnormal_logits, normal_logits = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    mask = torch.zeros(42, 42)
    mask[:20, :10] = 1.0
    maps = [_maps(abnormal_logits, normal_logits)]
    plain = anomaly_map_loss(maps, [mask], torch.tensor([1]))
    assert anomaly_map_loss(maps, [mask], torch.tensor([1]), share_weight=0.0).item() == plain.item()
    fraction = torch.nn.functional.adaptive_avg_pool2d(mask[None, None], (3, 3))[0, 0]
    with_share = anomaly_map_loss(maps, [mask], torch.tensor([1]), share_weight=1.0)
    assert with_share.item() == pytest.approx(plain.item() + lesion_share_loss(maps[0], fraction).item(), rel=1e-6)
