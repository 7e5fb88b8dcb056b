"""A bare Qwen2.5-VL-architecture model (Qwen2.5-VL, Lingshu, a stage-0 tiny backbone) as a baseline.

Same prompts and the same scoring as MEDIC-AD (the first answer token's Yes/No — or option-letter —
logits from one prefill), but no MEDIC-AD module: stock image features from the backbone's own
vision tower and merger, no ``<Ano>``/``<Diff>`` tokens (the processor is built with
``num_ano_tokens=0, num_diff_tokens=0``), and the backbone's own forward with ``pixel_values``,
``image_grid_thw`` and ``mm_token_type_ids``. This is the "Qwen2.5-VL-7B" / "Lingshu-7B" row of the
paper's tables when pointed at those folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from medic_ad.models.medic_ad import CHANGE_OPTIONS, DETECTION_PROMPT, ComparisonResult, DetectionResult, change_prompt
from medic_ad.models.qwen2_5_vl.backbone import Backbone, load_backbone
from medic_ad.models.qwen2_5_vl.processing import ChatExample

__all__ = ["BaselineVLM"]

_MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")


class BaselineVLM:
    """The backbone alone, with MEDIC-AD's ``detect`` / ``compare`` interface."""

    kind = "baseline"
    supports_heatmaps = False

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone.model
        self.processor = backbone.processor
        self.processor.num_ano_tokens = 0
        self.processor.num_diff_tokens = 0
        self.source = backbone.source
        self.backbone.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu",
                        dtype: str | torch.dtype | None = "auto") -> "BaselineVLM":
        return cls(load_backbone(path, dtype=dtype, device=device, num_ano_tokens=0, num_diff_tokens=0))

    @classmethod
    def tiny(cls, seed: int = 0) -> "BaselineVLM":
        from medic_ad.models.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl

        model, processor = build_tiny_qwen2_5_vl(seed=seed)
        return cls(Backbone(model=model, processor=processor, source="tiny"))

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # ------------------------------------------------------------------ the harness's low-level interface
    def prepare(self, examples: Sequence[ChatExample]) -> dict[str, torch.Tensor]:
        return self.processor(examples, use_diff=False)

    def _inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: batch[k].to(self.device) for k in _MODEL_KEYS}

    @torch.no_grad()
    def next_token_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.backbone(**self._inputs(batch), logits_to_keep=1, use_cache=False)
        return out.logits[:, -1].float()

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], *, max_new_tokens: int = 32,
                 forced_first: torch.Tensor | None = None) -> list[str]:
        inputs = self._inputs(batch)
        prefix: list[list[int]] = []
        if forced_first is not None:
            first = forced_first.to(self.device)[:, None]
            inputs["input_ids"] = torch.cat([inputs["input_ids"], first], 1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(first)], 1)
            inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(first)], 1)
            prefix = first.tolist()
            max_new_tokens -= 1
        if max_new_tokens <= 0:
            return [self.processor.decode(p) for p in prefix]
        generated = self.backbone.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        rows = generated[:, inputs["input_ids"].shape[1]:].tolist()
        if prefix:
            rows = [p + r for p, r in zip(prefix, rows)]
        return [self.processor.decode(r) for r in rows]

    # ------------------------------------------------------------------ user API (as MedicAD's)
    def detect(self, image: Any, *, max_new_tokens: int = 8, batch_size: int = 8):
        """"Is there any abnormality?" with ``score`` = P(Yes) vs P(No) of the first answer token."""
        from medic_ad.data.io import load_image_any

        items, single = (list(image), False) if isinstance(image, (list, tuple)) else ([image], True)
        if not items:
            raise ValueError("no images given")
        pil = [load_image_any(x).to_pil() for x in items]
        yes, no = self.processor.first_token_id("Yes"), self.processor.first_token_id("No")
        results: list[DetectionResult] = []
        for start in range(0, len(pil), batch_size):
            batch = self.prepare([ChatExample([im], DETECTION_PROMPT) for im in pil[start:start + batch_size]])
            p_yes = torch.softmax(self.next_token_logits(batch)[:, [yes, no]], -1)[:, 0].cpu()
            abnormal = p_yes >= 0.5
            first = torch.where(abnormal, torch.tensor(yes), torch.tensor(no))
            answers = self.generate(batch, max_new_tokens=max(max_new_tokens, 1), forced_first=first)
            results += [DetectionResult(answer=a, abnormal=bool(ab), score=float(s))
                        for a, ab, s in zip(answers, abnormal.tolist(), p_yes.tolist())]
        return results[0] if single else results

    def compare(self, prior: Any, current: Any, *, region: str | None = None,
                max_new_tokens: int = 8) -> ComparisonResult:
        from medic_ad.data.io import load_image_any

        images = [load_image_any(prior).to_pil(), load_image_any(current).to_pil()]
        batch = self.prepare([ChatExample(images, change_prompt(region))])
        letters = list(CHANGE_OPTIONS)
        ids = [self.processor.first_token_id(letter) for letter in letters]
        probs = torch.softmax(self.next_token_logits(batch)[0, ids], -1).cpu()
        best = int(probs.argmax())
        answer = self.generate(batch, max_new_tokens=max(max_new_tokens, 1), forced_first=torch.tensor([ids[best]]))[0]
        return ComparisonResult(answer=answer, label=CHANGE_OPTIONS[letters[best]],
                                probs={CHANGE_OPTIONS[k]: float(p) for k, p in zip(letters, probs.tolist())})

    def explain(self, image: Any):
        raise ValueError("a bare backbone has no heatmap decoder; grounding needs a MEDIC-AD checkpoint")
