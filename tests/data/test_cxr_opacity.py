"""Chest X-ray opacity change pairs: determinism, balance, labels by construction, acquisition, splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medic_ad.data.cxr_opacity import STATES, OpacityPairs, base_images, lung_fields
from medic_ad.data.schema import Sample

ROOT = Path(__file__).resolve().parents[2]


def _chest(seed: int, size: int = 96) -> np.ndarray:
    """A crude frontal chest film: bright body, two dark lung ellipses, a bright mediastinum, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    img = np.full((size, size), 0.75, dtype=np.float32)
    for cx in (0.29, 0.71):
        img[((xx - cx) / 0.17) ** 2 + ((yy - 0.47) / 0.3) ** 2 <= 1] = 0.3
    return np.clip(img + 0.03 * rng.standard_normal(img.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def sources() -> list[Sample]:
    return [Sample(id=f"chest/{k}", images=[_chest(k)], dataset="chest", split="train", group=f"p{k}")
            for k in range(4)]


def test_same_seed_same_pixels(sources) -> None:
    a, b = OpacityPairs(sources, seed=3, size=None), OpacityPairs(sources, seed=3, size=None)
    for i in (0, 4, 8):
        x, y = a[i], b[i]
        assert x.id == y.id and x.meta == y.meta
        for u, v in zip([*x.images, *x.masks], [*y.images, *y.masks]):
            np.testing.assert_array_equal(u, v)
    # pair i depends on (seed, i, sources) only: not on n nor on other pairs built first
    np.testing.assert_array_equal(OpacityPairs(sources, seed=3, n=40, size=None)[4].images[1], a[4].images[1])
    assert not np.array_equal(OpacityPairs(sources, seed=4, size=None)[4].images[1], a[4].images[1])


def test_balance_and_labels_match_construction(sources) -> None:
    pairs = OpacityPairs(sources, seed=0, n=36, size=None)
    built = list(pairs)
    assert Counter(s.change for s in built) == {"worsened": 12, "improved": 12, "no change": 12}
    assert [pairs.pair_id(i) for i in range(len(pairs))] == [s.id for s in built]
    assert {s.meta["state"] for s in built} == set(STATES)  # every state occurs in 36 pairs
    for s in built:
        prior, current = s.meta["areas"]
        assert STATES[s.meta["state"]] == s.change
        if s.change == "worsened":
            assert current > 0 and (prior == 0 or current / prior > 1.5)
        elif s.change == "improved":
            assert prior > 0 and current / prior < 0.6
        else:
            assert prior == current
        lung = s.meta["lung_area"]
        assert max(prior, current) <= 0.16 * lung and (max(prior, current) == 0 or max(prior, current) >= 0.035 * lung)
        assert len(s.images) == len(s.masks) == 2 and s.is_pair and s.label is None and s.question is None
        for image, mask in zip(s.images, s.masks):
            assert image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert bool(s.masks[0].any()) == (prior > 0) and bool(s.masks[1].any()) == (current > 0)


def test_opacity_brightens_inside_the_lungs(sources) -> None:
    s = next(p for p in OpacityPairs(sources, seed=1, size=None) if p.meta["state"] == "appear")
    mask = s.masks[1].astype(bool)
    lungs = lung_fields(sources[0].images[0])
    assert lungs[: lungs.shape[0] // 2].any() and not lungs[:, 45:51].any()  # two lungs, no mediastinum
    ring = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    ring[max(ys.min() - 6, 0): ys.max() + 7, max(xs.min() - 6, 0): xs.max() + 7] = True
    assert s.images[1][mask].mean() > s.images[1][ring & ~mask].mean() + 0.05


def test_acquisition_differs_between_prior_and_current(sources) -> None:
    for s in OpacityPairs(sources, seed=2, n=6, size=None):
        a, b = s.meta["acquisition"]
        assert a != b and 1.0 <= a["zoom"] <= 1.15 and 1.0 <= b["zoom"] <= 1.15
        if s.meta["state"] in ("stay", "clear"):  # same content, so any pixel difference is acquisition
            assert np.abs(s.images[0] - s.images[1]).mean() > 0.01


def test_rejects_pairs_as_sources(sources) -> None:
    pair = Sample(id="p", images=[_chest(0), _chest(1)], dataset="chest")
    with pytest.raises(ValueError, match="base_images"):
        OpacityPairs([pair])
    with pytest.raises(ValueError, match="no source"):
        OpacityPairs([])


def test_base_images_keeps_each_image_once(tmp_path) -> None:
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray((_chest(k) * 255).astype(np.uint8)).save(paths[-1])
    pairs = [Sample(id="a", images=[paths[0], paths[1]], dataset="cxr", split="train", group="g"),
             Sample(id="b", images=[paths[1], paths[2]], dataset="cxr", split="train", group="g")]
    bases = base_images(pairs)
    assert [b.images[0] for b in bases] == paths and {b.split for b in bases} == {"train"}
    s = OpacityPairs(bases, seed=0, size=64)[0]
    assert max(s.images[0].shape) == 64 and s.masks[0].shape == s.images[0].shape


# --- on the shared chest X-rays -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cxr_root(shared_data) -> Path:
    root = shared_data / "cxr_pairs"
    if not (root / "pairs.csv").is_file():
        pytest.skip(f"{root}/pairs.csv not found: the shared chest X-ray pairs are absent")
    return root


def test_train_source_never_uses_a_val_image(cxr_root) -> None:
    from medic_ad.data.registry import get_dataset
    from medic_ad.training.config import DataSource
    from medic_ad.training.mixture import load_source

    val_images = {p for s in get_dataset("cxr_pairs").load(cxr_root, split="val") for p in s.images}
    assert val_images
    pairs = load_source(DataSource(name="cxr_opacity_pairs", root=str(cxr_root), split="train", task="change",
                                   options={"seed": 4}))
    assert isinstance(pairs, OpacityPairs) and len(pairs) == 3 * len(pairs.sources)
    used = {s.images[0] for s in pairs.sources}
    assert used and not used & val_images and {s.split for s in pairs.sources} == {"train"}
    s = pairs[1]
    assert s.split == "train" and s.change == "improved" and max(s.images[0].shape) == 256
    with pytest.raises(ValueError, match="unknown option"):
        load_source(DataSource(name="cxr_opacity_pairs", root=str(cxr_root), split="train", options={"sed": 4}))
    with pytest.raises(ValueError, match="balanced by change"):
        load_source(DataSource(name="cxr_opacity_pairs", root=str(cxr_root), label="normal"))


def test_eval_task_builds_balanced_val_pairs(cxr_root) -> None:
    from medic_ad.data.registry import get_dataset
    from medic_ad.eval.samples import SampleList, load_task_samples, sample_ids
    from medic_ad.eval.tasks import get_task

    task = get_task("demo_cxr_pairs")
    assert task.split == "val" and task.pairs == {"kind": "opacity", "seed": 10007}
    data = load_task_samples(task, data_root=cxr_root.parent)
    assert isinstance(data.samples, SampleList)
    n_images = len(base_images(get_dataset("cxr_pairs").load(cxr_root, split="val")))
    assert len(data.samples) == 3 * n_images
    ids = sample_ids(data.samples)
    assert Counter(i.rsplit("/", 1)[1].split("_", 1)[1] for i in ids) == {
        "worsened": n_images, "improved": n_images, "no_change": n_images}
    assert {s.split for s in data.samples.sources()} == {"val"}
    s = data.samples[2]
    assert s.id == ids[2] and s.change == "no change" and s.split == "val"


def test_stage2_config_builds_the_cxr_source(cxr_root, tmp_path) -> None:
    from medic_ad.training.config import load_config
    from medic_ad.training.mixture import _describe, load_source

    cfg = load_config(ROOT / "recipes" / "configs" / "tiny" / "stage2_difference.yaml")
    entry = next(s for s in cfg.data if s.name == "cxr_opacity_pairs")
    assert entry.split == "train" and entry.task == "change" and Path(entry.root).resolve() == cxr_root.resolve()
    pairs = load_source(entry)
    assert isinstance(pairs, OpacityPairs) and pairs.seed == 4
    assert pairs[0].change == "worsened" and pairs[0].is_pair
    summary = _describe(pairs)  # data_summary.json's entry, without building a pair
    third = len(pairs) // 3
    assert summary["by_change"] == {"worsened": third, "improved": third, "no change": third}
    assert summary["base_images"] == len(pairs.sources) and summary["ids"][0] == pairs.pair_id(0)


def test_task_pairs_kind_is_checked(tmp_path) -> None:
    from medic_ad.eval.samples import load_task_samples
    from medic_ad.eval.tasks import TaskSpec

    with pytest.raises(ValueError, match="pairs kind"):
        TaskSpec(name="t", kind="change", data="x", pairs={"kind": "nodule"})
    for k in range(2):
        (tmp_path / "no").mkdir(exist_ok=True)
        Image.fromarray((_chest(k) * 255).astype(np.uint8)).save(tmp_path / "no" / f"{k}.png")
    task = TaskSpec(name="t", kind="change", data=str(tmp_path), format="image_folder",
                    pairs={"kind": "opacity", "seed": 1, "size": 64, "max_sources": 1})
    data = load_task_samples(task)
    assert len(data.samples) == 3 and data.samples[0].change == "worsened"
    with pytest.raises(ValueError, match="unknown opacity pairs option"):
        load_task_samples(TaskSpec(name="t", kind="change", data=str(tmp_path), format="image_folder",
                                   pairs={"kind": "opacity", "strength": 1}))


def test_opacity_images_source_gives_single_films_with_their_opacity(cxr_root) -> None:
    from medic_ad.data.cxr_opacity import OpacityImages
    from medic_ad.data.registry import get_dataset
    from medic_ad.training.config import DataSource
    from medic_ad.training.mixture import _describe, load_source

    entry = DataSource(name="cxr_opacity_images", root=str(cxr_root), split="train", task="detection",
                       options={"seed": 5, "n": 64})
    assert entry.split == "train" and entry.task == "detection"
    images = load_source(entry)
    assert isinstance(images, OpacityImages) and len(images) == entry.options["n"]
    val_images = {p for s in get_dataset("cxr_pairs").load(cxr_root, split="val") for p in s.images}
    assert not {s.images[0] for s in images.sources} & val_images
    for s in images[:6]:  # the current film of a worsened pair: an opacity, its mask, labelled abnormal
        assert s.label == "abnormal" and not s.is_pair and s.masks[0].sum() > 0
        assert s.masks[0].shape == s.images[0].shape and s.split == "train"
    assert images[2].id == images.image_id(2) and images[2].images[0].tobytes() == images[2].images[0].tobytes()
    summary = _describe(images)
    assert summary["images"] == len(images) and summary["ids"][0] == images.image_id(0)
    with pytest.raises(ValueError, match="cxr_opacity_images source: label has nothing to filter"):
        load_source(DataSource(name="cxr_opacity_images", root=str(cxr_root), label="normal"))


def test_stage1_asks_where_the_opacity_is_not_whether_there_is_one(cxr_root) -> None:
    """Stage 1's chest X-ray films train the anomaly maps on their masks, and the language model on the
    region, never on a "Yes": every film of the source has an opacity."""
    from medic_ad.data.templates import DETECTION_ANSWERS, describe_region, make_example
    from medic_ad.paths import repo_root
    from medic_ad.training.config import load_config
    from medic_ad.training.mixture import load_source

    cfg = load_config(repo_root() / "recipes" / "configs" / "tiny" / "stage1_anomaly.yaml")
    (entry,) = [d for d in cfg.data if d.name == "cxr_opacity_images"]
    assert entry.task == "grounding" and entry.split == "train"
    entry.root = str(cxr_root)
    entry.options = {**entry.options, "n": 6}
    for s in load_source(entry)[:3]:
        example = make_example(s, entry.task)
        assert example.answer == describe_region(s.masks[0])
        assert example.answer not in DETECTION_ANSWERS.values()
