"""A few training steps of every stage at the full Lingshu-7B / Qwen2.5-VL-7B shape, random weights.

Behind the ``gpu`` marker (``pytest -m gpu tests/gpu``) and skipped without CUDA. The model is built
directly on the GPU by ``benchmarks/gpu_7b.build`` (bf16), then each stage's trainable set and the
``bf16-frozen`` policy are applied and a few AdamW steps run under bf16 autocast with gradient
checkpointing, as the lingshu7b recipes train. Each stage prints its peak memory next to the dry
run's estimate for one GPU (``medic-ad train --dry-run``), so a GPU session can record both.
ZeRO-3 runs when several GPUs and DeepSpeed are there (``accelerate launch`` of this file).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
STEPS = 3
IMAGE = 448  # 256 image tokens per image


def _model():
    from benchmarks import flops, gpu_7b

    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    return gpu_7b.build(flops.QWEN2_5_VL_7B_TEXT, flops.QWEN2_5_VL_7B_VISION, device=torch.device("cuda"),
                        dtype=torch.bfloat16, attn=attn, image_size=IMAGE)


def _batch(model, stage: int, n: int = 2):
    from benchmarks import common
    from medic_ad.data.templates import DETECTION_PROMPT, ChatExample, change_prompt

    images = common.load_images(2 * n, IMAGE)
    if stage == 2:
        examples = [ChatExample(images[2 * i:2 * i + 2], change_prompt(), "C: Worsened") for i in range(n)]
    else:
        examples = [ChatExample([images[i]], DETECTION_PROMPT, "Yes.") for i in range(n)]
    return {k: v.cuda() for k, v in model.prepare(examples, with_answers=True).items()}


def run_stage(model, stage: int) -> dict[str, float]:
    from medic_ad.models.precision import apply_precision

    model.set_stage(stage)
    apply_precision(model, "bf16-frozen", backbone=model.backbone)
    model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in params} == {torch.float32}
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    batch = _batch(model, stage)
    torch.cuda.reset_peak_memory_stats()
    losses = []
    for _ in range(STEPS):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if stage == 3:
                out = model(**batch, compute_lm=False, compute_heatmap=True)
                loss = sum(h.float().mean() for h in out.heatmap_logits)
            else:
                loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    states = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    assert {t.dtype for t in states} == {torch.float32}
    return {"losses": losses, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def test_every_stage_steps_at_7b_shape():
    model = _model()
    for stage in (1, 2, 3):
        result = run_stage(model, stage)
        print(f"[gpu 7B] stage {stage}: losses {result['losses']}, peak {result['peak_gib']:.1f} GiB "
              f"(batch 2, {IMAGE}² images)")


@pytest.mark.skipif(torch.cuda.device_count() < 2 or importlib.util.find_spec("deepspeed") is None,
                    reason="ZeRO-3 needs several GPUs and DeepSpeed")
def test_zero3_steps_at_7b_shape(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / "deepspeed_zero3.yaml"),
           "--num_processes", str(torch.cuda.device_count()), __file__, "--zero3"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "zero3 ok" in proc.stdout


def _zero3_main() -> None:
    """Stage 1 under accelerate + DeepSpeed ZeRO-3 (run by ``accelerate launch`` from the test above)."""
    from accelerate import Accelerator

    accelerator = Accelerator()
    model = _model()
    model.set_stage(1)
    from medic_ad.models.precision import apply_precision

    apply_precision(model, "bf16-frozen", backbone=model.backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    batch = _batch(accelerator.unwrap_model(model), 1)
    for _ in range(STEPS):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if accelerator.is_main_process:
        print("zero3 ok", float(loss.detach()))


if __name__ == "__main__" and "--zero3" in sys.argv:
    _zero3_main()
