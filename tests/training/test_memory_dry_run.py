"""Config keys for memory and precision, the stage recipes applying them, and ``medic-ad train --dry-run``.

Defects of issue 17 ("Memory and precision") covered here, each failing before the fix:
- stage 1 read the backbone in fp32 (``test_stage1_reads_the_backbone_in_the_policy_dtype``);
- no image-size cap in the config (``test_image_cap_keys_reach_the_collator_and_the_checkpoint``);
- ``sdpa`` hard-coded (``test_memory_keys_are_validated``: the key exists and is checked).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medic_ad import MedicAD
from medic_ad.data.collator import Collator
from medic_ad.data.synthetic import SyntheticControl
from medic_ad.training.config import load_config
from medic_ad.training.memory import apply_pixel_caps

ROOT = Path(__file__).resolve().parents[2]
TINY1 = ROOT / "recipes" / "configs" / "tiny" / "stage1_anomaly.yaml"
L7B = ROOT / "recipes" / "configs" / "lingshu7b"
BACKBONE_7B = ROOT / "recipes" / "backbones" / "qwen2_5_vl_7b"
sys.path.insert(0, str(ROOT))


def test_memory_keys_are_validated():
    cfg = load_config(TINY1, ["precision=bf16-frozen", "attn_implementation=eager", "image_max_pixels=12544",
                              "data.0.max_pixels=3136"])
    assert cfg.mixed_precision == "bf16"  # bf16-frozen runs its matmuls under bf16 autocast
    assert cfg.pixel_cap(cfg.data[0]) == (None, 3136) and cfg.pixel_cap(cfg.data[1]) == (None, 12544)
    for bad, match in (("precision=bf16", "precision must be one of"),
                       ("attn_implementation=flash", "attn_implementation must be one of"),
                       ("image_max_pixels=100", "must be an integer ≥ 784"),
                       ("data.0.min_pixels=1000000", "min_pixels 1000000 is above max_pixels"),
                       ("mixed_precision=fp16", None)):
        extra = ["precision=bf16-frozen"] if bad.startswith("mixed") else []
        extra += ["data.0.max_pixels=3136"] if "min_pixels" in bad else []
        with pytest.raises(ValueError, match=match or "fp16 does not go with it"):
            load_config(TINY1, [bad, *extra])
    for path in L7B.glob("stage*.yaml"):  # the 7B recipes cap images and keep frozen weights bf16
        cfg = load_config(path)
        assert cfg.precision == "bf16-frozen" and cfg.image_max_pixels == 401408


def test_image_cap_keys_reach_the_collator_and_the_checkpoint(tmp_path):
    cfg = load_config(TINY1, ["image_max_pixels=12544", "data.1.max_pixels=3136", "data.1.min_pixels=3136"])
    model = MedicAD.tiny(seed=0)

    class Sampler:  # the two sources the collator sees, as the mixture holds them
        sources = [SyntheticControl(size=168, seed=0).lazy("detection", 4),
                   SyntheticControl(size=168, seed=1).lazy("detection", 4), [], []][: len(cfg.data)]

    sampler = Sampler()
    apply_pixel_caps(sampler, cfg, model.processor)
    assert model.processor.pixel_cap[1] == 12544
    collate = Collator(model.processor, use_diff=False)
    default = collate([sampler.sources[0][0]])
    own = collate([sampler.sources[1][0]])
    mixed = collate([sampler.sources[0][0], sampler.sources[1][0]])
    tokens = lambda b: (b["image_grid_thw"].prod(-1) // 4).tolist()  # noqa: E731
    assert tokens(default) == [16] and tokens(own) == [4] and tokens(mixed) == [16, 4]
    assert mixed["masks"][1].shape == (own["image_grid_thw"][0, 1] * 14, own["image_grid_thw"][0, 2] * 14)
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "medic_ad_config.json").read_text())["pixel_cap"] == [3136, 12544]


def test_stage1_reads_the_backbone_in_the_policy_dtype(tmp_path):
    from medic_ad.training import stage1_anomaly

    MedicAD.tiny(seed=0).save_backbone(tmp_path / "bb")
    overrides = [f"input_checkpoint={tmp_path / 'bb'}", "precision=bf16-frozen", "model.feature_layers=null"]
    model = stage1_anomaly.build(load_config(TINY1, overrides))
    head = model.backbone.model.language_model.layers[0].mlp.up_proj.base_layer.weight
    assert head.dtype == torch.bfloat16  # read as bf16: no fp32 copy of the backbone ever existed
    assert {p.dtype for p in model.lora_parameters().values()} == {torch.float32}


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: a bf16 run would pin every later run of this process to bf16."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_tiny_stage1_trains_under_bf16_frozen(tmp_path, fresh_accelerate_state, shared_data):
    # the tiny stage-1 recipe trains on the shared Br35H images
    from medic_ad.training import train

    cfg = load_config(TINY1, [f"output_dir={tmp_path / 'run'}", "input_checkpoint=tiny", "optim.max_steps=2",
                              "optim.batch_size=2", "checkpoint_every=0", "progress=false", "tensorboard=false",
                              "precision=bf16-frozen", "image_max_pixels=3136", "model.feature_layers=null"])
    result = train(cfg)
    assert torch.isfinite(torch.tensor(result.final_loss))
    loaded = MedicAD.from_pretrained(result.output)
    assert loaded.processor.pixel_cap == (3136, 3136)
    assert {p.dtype for p in loaded.lora_parameters().values()} == {torch.float32}


# ------------------------------------------------------------------------------------------------ dry run
def _dry_run_cli(*args: str) -> tuple[dict, int]:
    """Run ``medic-ad train --dry-run --json`` in a fresh process: (report, its peak RSS in KiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "medic_ad.cli.main", "train", *args, "--dry-run", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(proc.stdout), max(peak, before)


def test_dry_run_7b_stage1_needs_no_memory_and_counts_right():
    from benchmarks import flops

    report, peak_kib = _dry_run_cli("--config", str(L7B / "stage1_anomaly.yaml"),
                                    f"input_checkpoint={BACKBONE_7B}")
    analytic = flops.backbone_params(flops.QWEN2_5_VL_7B_TEXT, flops.QWEN2_5_VL_7B_VISION)
    assert abs(report["backbone_parameters"] - analytic) <= 0.01 * analytic
    lora = flops.lora_weights(flops.QWEN2_5_VL_7B_TEXT, 16)
    modules = report["parameters"] - report["backbone_parameters"] - lora
    assert 0 < modules < 0.05 * analytic
    assert lora < report["trainable"] < lora + modules
    assert report["params_by_dtype"]["bfloat16"] == analytic  # the frozen backbone; the rest fp32
    # a 512-token cap: one image at most 512 tokens + <Ano> + the chat text
    assert report["tokens_per_sample"] == max(s["tokens"] for s in report["sources"])
    assert 512 + 16 < report["tokens_per_sample"] < 512 + 16 + 200
    weights = report["memory_bytes"]["weights"] / 2**30
    assert 15 < weights < 17  # 8.3 B bf16 + ~0.2 B fp32
    assert peak_kib < 3 * 2**20, "the dry run allocated real weights"  # bf16 weights alone are 15.5 GiB


def test_dry_run_engines_order_and_stages(tmp_path):
    from medic_ad.training.dry_run import dry_run

    totals = {}
    for engine, n in (("single", 1), ("ddp", 8), ("zero2", 8), ("zero3", 8), ("fsdp", 8)):
        cfg = load_config(L7B / "stage2_difference.yaml", [f"input_checkpoint={BACKBONE_7B}"])
        report, model = dry_run(cfg, engine=engine, num_gpus=n)
        assert all(p.device.type == "meta" for p in model.parameters())
        totals[engine] = report.memory
    assert totals["ddp"]["total"] > totals["single"]["total"] > totals["zero2"]["total"] > totals["zero3"]["total"]
    assert totals["zero3"]["weights"] < totals["single"]["weights"] / 2
    s3, _ = dry_run(load_config(L7B / "stage3_heatmap.yaml", [f"input_checkpoint={BACKBONE_7B}"]))
    s2, _ = dry_run(load_config(L7B / "stage2_difference.yaml", [f"input_checkpoint={BACKBONE_7B}"]))
    assert s2.sources[0].images == 2 and s2.tokens_per_sample > 2 * 512
    assert 0 < s3.trainable < s2.trainable and s3.memory["activations"] > 0
    with pytest.raises(ValueError, match="engine single runs on one GPU"):
        dry_run(cfg, engine="single", num_gpus=8)


def test_dry_run_reads_an_accelerate_config():
    from medic_ad.training.dry_run import engine_from_accelerate_config

    acc = ROOT / "recipes" / "accelerate"
    assert engine_from_accelerate_config(acc / "multi_gpu_ddp.yaml") == ("ddp", 8)
    assert engine_from_accelerate_config(acc / "deepspeed_zero3.yaml") == ("zero3", 8)
    assert engine_from_accelerate_config(acc / "deepspeed_zero2.yaml")[0] == "zero2"
    assert engine_from_accelerate_config(acc / "fsdp.yaml") == ("fsdp", 8)
    assert engine_from_accelerate_config(acc / "single_gpu.yaml") == ("single", 1)


def test_dry_run_batch_is_the_per_gpu_share_of_the_global_batch():
    from medic_ad.training.config import load_config
    from medic_ad.training.dry_run import per_gpu_batch

    cfg = load_config(L7B / "stage1_anomaly.yaml")
    assert cfg.optim.batch_size == 128 and per_gpu_batch(cfg, 1) == per_gpu_batch(cfg, 8) == 4
    plain = load_config(L7B / "stage1_anomaly.yaml",
                        ["optim.micro_batch_size=null", "optim.grad_accum=2"])
    assert per_gpu_batch(plain, 8) == 8 and per_gpu_batch(plain, 1) == 64
