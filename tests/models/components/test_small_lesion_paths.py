"""The paths that carry a small lesion from the anomaly map to the tokens and the heatmap:
per-cell peaks into the ``<Ano>`` queries, lesion burden into the ``<Diff>`` queries, pixels into the
heatmap decoder, and the pixels themselves recovered from Qwen2.5-VL's packed patch rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medic_ad.models.components.anomaly_processor import AnomalyProcessor
from medic_ad.models.components.diff_processor import DiffProcessor
from medic_ad.models.components.heatmap_decoder import HeatmapDecoder
from medic_ad.models.medic_ad import MedicAD
from medic_ad.data.templates import ChatExample


def test_peaks_keep_a_one_patch_lesion_that_average_pooling_dilutes():
    proc = AnomalyProcessor(vision_dim=16, llm_dim=16, anomaly_dim=8, qformer_dim=8, qformer_heads=2)
    anomaly = torch.full((12, 12), -1.0)
    anomaly[5, 7] = 0.9  # one patch, in cell (row 1, col 2) of the 4 × 4 grid
    peaks = proc.peaks(anomaly)
    assert peaks.shape == (16,)
    assert peaks[1 * 4 + 2] == pytest.approx(0.9)
    assert torch.all(torch.cat([peaks[:6], peaks[7:]]) == -1.0)
    # the average over the same 3 × 3 cell barely moves: the reason the peaks are there
    avg = torch.nn.functional.adaptive_avg_pool2d(anomaly[None, None], 4).flatten()
    assert avg[6] < -0.75


def test_peaks_reach_the_ano_tokens():
    torch.manual_seed(0)
    proc = AnomalyProcessor(vision_dim=16, llm_dim=16, num_layers=1, prompt_layers=1, anomaly_dim=8,
                            qformer_dim=8, qformer_heads=2, qformer_layers=1).eval()
    layers = [[torch.randn(12, 12, 16)]]
    projected = [torch.randn(36, 16)]
    tokens, maps = proc(layers, projected)
    proc.peak_embed.data.zero_()
    without, _ = proc(layers, projected)
    assert not torch.allclose(tokens, without)


def test_diff_burden_says_which_study_has_more_lesion():
    diff = DiffProcessor(anomaly_dim=8, llm_dim=16, qformer_dim=8, qformer_heads=2, qformer_layers=1)
    small = torch.zeros(12, 12)
    small[4:6, 4:6] = 1.0  # 4 patches of lesion
    large = torch.zeros(12, 12)
    large[3:8, 3:8] = 1.0  # 25 patches
    grew, shrank, same = diff.burden(small, large), diff.burden(large, small), diff.burden(small, small)
    assert grew.shape == (16, 4)
    assert grew[0, 3].item() == pytest.approx(np.log(25.5 / 4.5), rel=1e-5)
    assert shrank[0, 3] == -grew[0, 3] and same[0, 3] == 0.0
    assert torch.all(same[:, 0] == 0) and grew[:, 0].sum() > 0  # per-cell current − prior
    assert diff.burden(torch.zeros(12, 12), torch.zeros(12, 12))[0, 3] == 0.0  # two clean images


def test_diff_burden_stacks_every_burden_map():
    diff = DiffProcessor(anomaly_dim=8, llm_dim=16, qformer_dim=8, qformer_heads=2, qformer_layers=1)
    share, abnormal = torch.zeros(2, 12, 12), torch.zeros(2, 12, 12)
    share[1, 3:8, 3:8], abnormal[1, 2:9, 2:9] = 1.0, 1.0  # the current study's lesion: 25 and 49 patches
    both = diff.burden(torch.stack([share[0], abnormal[0]]), torch.stack([share[1], abnormal[1]]))
    assert both.shape == (16, 8)
    assert torch.equal(both[:, :4], diff.burden(share[0], share[1]))
    assert both[0, 7].item() == pytest.approx(np.log(49.5 / 0.5), rel=1e-5)
    proc = AnomalyProcessor(vision_dim=16, llm_dim=16, num_layers=2, prompt_layers=2, anomaly_dim=8,
                            qformer_dim=8, qformer_heads=2)
    maps = proc.compute_maps([torch.randn(6, 6, 16), torch.randn(6, 6, 16)])
    assert torch.equal(maps.burden_maps, torch.stack([maps.lesion_share, maps.abnormal.mean(0)]))


def test_lesion_share_is_one_minus_the_normal_map():
    proc = AnomalyProcessor(vision_dim=16, llm_dim=16, num_layers=2, prompt_layers=2, anomaly_dim=8,
                            qformer_dim=8, qformer_heads=2)
    maps = proc.compute_maps([torch.randn(6, 6, 16), torch.randn(6, 6, 16)])
    assert torch.allclose(maps.lesion_share, 1 - maps.normal.mean(0))


def test_heatmap_decoder_sees_the_pixels():
    torch.manual_seed(0)
    dec = HeatmapDecoder(vision_dim=16, llm_dim=16, num_layers=1, dim=16, num_heads=2, depth=1).eval()
    kwargs = dict(layers=[torch.randn(1, 4, 4, 16)], projected=torch.randn(1, 4, 16), ano_tokens=torch.randn(1, 16, 16),
                  anomaly_map=torch.zeros(1, 4, 4), out_size=(56, 56))
    image = torch.zeros(1, 3, 56, 56)
    blank = dec(**kwargs, image=image)[0]
    image[:, :, 20:30, 20:30] = 2.0
    spot = dec(**kwargs, image=image)[0]
    assert blank.shape == (56, 56)
    change = (spot - blank).abs()
    assert change[20:30, 20:30].mean() > 10 * change[:8, :8].mean()  # local: four 3 × 3 convs see the pixels
    assert torch.equal(dec(**kwargs), dec(**kwargs, image=torch.zeros(1, 3, 56, 56)))


def test_heatmap_decoder_input_resolution_layers():
    """What runs at input resolution, by checkpoint key: the pixel stem, the pixel half of the join and the
    head (the join ``dim // 2`` wide, the rest ``dim // 4``); the feature half of the join runs before the
    upsampling."""
    dec = HeatmapDecoder(vision_dim=16, llm_dim=16, num_layers=1, dim=32, num_heads=2, depth=1)
    shapes = {n: tuple(p.shape) for n, p in dec.named_parameters()
              if n.startswith(("pixel_stem.", "feature_join.", "pixel_join.", "head."))}
    assert shapes == {
        "pixel_stem.0.weight": (8, 3, 3, 3), "pixel_stem.0.bias": (8,),
        "pixel_stem.2.weight": (8, 8, 3, 3), "pixel_stem.2.bias": (8,),
        "feature_join.weight": (16, 8, 3, 3), "feature_join.bias": (16,),
        "pixel_join.weight": (16, 8, 3, 3),
        "head.0.weight": (8, 16, 3, 3), "head.0.bias": (8,),
        "head.2.weight": (1, 8, 1, 1), "head.2.bias": (1,),
    }


def test_heatmap_decoder_batch_matches_one_image_at_a_time():
    torch.manual_seed(0)
    dec = HeatmapDecoder(vision_dim=16, llm_dim=16, num_layers=2, dim=16, num_heads=2, depth=1).eval()
    b = 3
    kwargs = dict(layers=[torch.randn(b, 4, 6, 16), torch.randn(b, 4, 6, 16)], projected=torch.randn(b, 6, 16),
                  ano_tokens=torch.randn(b, 16, 16), anomaly_map=torch.randn(b, 4, 6), image=torch.randn(b, 3, 56, 84))
    with torch.no_grad():
        batched = dec(**kwargs, out_size=(56, 84))
        single = torch.cat([dec(**{k: ([x[i:i + 1] for x in v] if k == "layers" else v[i:i + 1])
                                   for k, v in kwargs.items()}, out_size=(56, 84)) for i in range(b)])
    assert batched.shape == (b, 56, 84)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)  # GRN and attention stay per image


def test_unpatchify_gives_back_the_processed_image():
    model = MedicAD.tiny()
    yy, xx = np.mgrid[0:112, 0:168]
    arr = np.stack([xx / 168 * 255, yy / 112 * 255, xx * 0 + 128], -1).astype(np.uint8)
    second = np.ascontiguousarray(arr[::-1, ::-1])
    batch = model.prepare([ChatExample([Image.fromarray(arr)], "Is there any abnormality in this image?"),
                           ChatExample([Image.fromarray(second)], "Is there any abnormality in this image?")])
    images = model.unpatchify(batch["pixel_values"], batch["image_grid_thw"])
    assert len(images) == 2
    for image, source, (t, h, w) in zip(images, (arr, second), batch["image_grid_thw"].tolist()):
        assert image.shape == (3, h * 14, w * 14)
        ref = np.asarray(Image.fromarray(source).resize((w * 14, h * 14), Image.BICUBIC), dtype=np.float32)
        for c in range(2):  # the gradients, after resizing and normalising, in the same place
            assert np.corrcoef(image[c].numpy().ravel(), ref[..., c].ravel())[0, 1] > 0.999
