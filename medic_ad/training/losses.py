"""Training losses of the three stages (design doc §5).

Stage 1: the language loss on answer tokens, plus anomaly-map supervision — with a pixel mask,
focal loss + Dice between each layer's abnormal map and the mask at patch resolution (a patch a quarter
covered counts as abnormal), and BCE between the normal map and each patch's normal share (so
1 − normal estimates how much of a patch is lesion: the Diff Processor's burden); with an image label only,
a top-k mean of the abnormal map against the label (a normal image is normal in every patch); with
neither, the language loss alone. Stage 3: Dice + BCE between the heatmap and the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medic_ad.models.components.anomaly_processor import AnomalyMaps


def focal_bce_with_logits(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
                          alpha: float | None = None) -> torch.Tensor:
    """Mean focal loss (gamma = 0 gives plain BCE); ``alpha`` weights the positive class."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if gamma:
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        bce = bce * (1 - p_t).pow(gamma)
    if alpha is not None:
        bce = bce * (alpha * target + (1 - alpha) * (1 - target))
    return bce.mean()


def mask_to_patches(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(H, W) mask at the processed image size → (h, w) lesion fraction per patch."""
    return F.adaptive_avg_pool2d(mask[None, None].float(), grid)[0, 0]


def anomaly_map_loss(
    maps: list[AnomalyMaps],
    masks: list[torch.Tensor | None],
    labels: torch.Tensor,
    *,
    gamma: float = 2.0,
    top_k: float = 0.1,
    share_weight: float = 0.0,
) -> torch.Tensor | None:
    """Supervision of every tapped layer's abnormal and normal maps; None when nothing supervises.

    ``share_weight`` adds :func:`lesion_share_loss` on images with a mask (0: off, the default).
    """
    terms = []
    for m, mask, label in zip(maps, masks, labels.tolist()):
        grid = tuple(m.abnormal.shape[-2:])
        if mask is not None:
            # soft patch targets: a patch a quarter covered by lesion is fully abnormal, so lesions
            # smaller than a patch still light their patch up instead of vanishing at a 0.5 threshold
            fraction = mask_to_patches(mask.to(m.abnormal_logits.device), grid).expand_as(m.abnormal_logits)
            target = (fraction / 0.25).clamp(0, 1)
            # focal + Dice as AnomalyGPT: lesions cover a few patches, so the Dice term carries them
            dice = torch.stack([dice_loss(p, t) for p, t in zip(m.abnormal, target)]).mean()
            term = (focal_bce_with_logits(m.abnormal_logits, target, gamma=gamma) + dice
                    + F.binary_cross_entropy_with_logits(m.normal_logits, 1 - fraction))
            if share_weight:
                term = term + share_weight * lesion_share_loss(m, fraction[0])
            terms.append(term)
        elif label == 0:
            zeros = torch.zeros_like(m.abnormal_logits)
            terms.append(focal_bce_with_logits(m.abnormal_logits, zeros, gamma=gamma)
                         + focal_bce_with_logits(m.normal_logits, 1 - zeros, gamma=gamma))
        elif label == 1:
            flat = m.abnormal_logits.flatten(1)
            k = max(1, int(round(top_k * flat.shape[1])))
            top = flat.topk(k, dim=1).values.mean(1)
            terms.append(F.binary_cross_entropy_with_logits(top, torch.ones_like(top)))
    return _mean_over_images(terms)


def lesion_share_loss(m: AnomalyMaps, fraction: torch.Tensor) -> torch.Tensor:
    """An optional extra pull of the normal map toward each patch's lesion share ((h, w) ``fraction``)
    and toward the lesion area it adds up to, which the Diff Processor compares between studies.

    Lesion patches are few, so their BCE toward the normal share is weighted by sqrt(other patches /
    lesion patches); a smooth L1 (beta 0.5) compares each layer's log lesion area in patches with the
    mask's (half a patch added, as :meth:`DiffProcessor.burden`). The shipped configs leave it off:
    it helps change accuracy but made control detection unstable (``docs/model.md``, "Stage 1,
    lesion share").
    """
    lesion = (fraction > 0).to(m.normal_logits.dtype)
    n_lesion = lesion.sum().clamp(min=1.0)
    weight = 1.0 + lesion * ((lesion.numel() - n_lesion) / n_lesion).sqrt()
    bce = F.binary_cross_entropy_with_logits(m.normal_logits, (1 - fraction).expand_as(m.normal_logits),
                                             weight=weight.expand_as(m.normal_logits))
    area = torch.log((1 - m.normal).flatten(1).sum(1) + 0.5)
    return bce + F.smooth_l1_loss(area, torch.log(fraction.sum() + 0.5).expand_as(area), beta=0.5)


def dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice; with ``eps`` an empty target and an empty prediction agree."""
    inter = (probs * target).sum()
    return 1 - (2 * inter + eps) / (probs.sum() + target.sum() + eps)


def heatmap_loss(
    heatmap_logits: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    labels: torch.Tensor,
    *,
    dice_weight: float = 2.0,
    bce_weight: float = 1.0,
    pos_weight_power: float = 0.5,
) -> torch.Tensor | None:
    """Dice + BCE (2 : 1 as Citrus-V) per image with a mask; a normal image's target is empty.

    A lesion covers about 1 % of the pixels, so plain BCE is nearly all background; lesion pixels are
    weighted by (background / lesion pixels) ** ``pos_weight_power`` (0: plain BCE). Unweighted, the
    decoder does not learn lesions darker than their tissue, which look like background
    (``docs/model.md``, "Stage 3, heatmap BCE").
    """
    terms = []
    for logits, mask, label in zip(heatmap_logits, masks, labels.tolist()):
        if mask is None:
            if label != 0:
                continue
            mask = torch.zeros_like(logits)
        mask = mask.to(logits.device, logits.dtype)
        probs = torch.sigmoid(logits)
        lesion = mask.sum()
        pos_weight = ((mask.numel() - lesion) / lesion.clamp(min=1.0)).pow(pos_weight_power).clamp(min=1.0)
        terms.append(dice_weight * dice_loss(probs, mask)
                     + bce_weight * F.binary_cross_entropy_with_logits(logits, mask, pos_weight=pos_weight))
    return _mean_over_images(terms)


def _mean_over_images(terms: list[torch.Tensor]) -> torch.Tensor | None:
    """Mean of the per-image loss terms; None when no image is supervised."""
    return torch.stack(terms).mean() if terms else None
