"""A bare Qwen2.5-VL-architecture model (Qwen2.5-VL, Lingshu, a stage-0 tiny backbone) as a baseline.

Same prompts, options and scoring as MEDIC-AD (:mod:`medic_ad.models.interface`, one ``generate`` per
batch with :func:`~medic_ad.models.decoding.generate_choice`), but no MEDIC-AD module: stock image
features from the backbone's own vision tower and merger, no ``<Ano>``/``<Diff>`` tokens (the processor
is built with ``num_ano_tokens=0, num_diff_tokens=0``), no anomaly maps and no heatmaps. This is the
"Qwen2.5-VL-7B" / "Lingshu-7B" row of the paper's tables when pointed at those folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import LogitsProcessorList

from medic_ad.data.templates import ChatExample
from medic_ad.models.decoding import generate_choice, option_tokens
from medic_ad.models.interface import Choice, MedicalVLM, load_pil, register_model
from medic_ad.models.qwen2_5_vl.backbone import Backbone, load_backbone

__all__ = ["BaselineVLM"]

_MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")


@register_model("baseline")
class BaselineVLM(MedicalVLM):
    """The backbone alone, behind the same interface as MEDIC-AD."""

    has_heatmaps = False

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
    def load(cls, path: str | Path, *, device: str = "cpu", dtype: Any = "auto") -> "BaselineVLM":
        return cls.from_pretrained(path, device=device, dtype=dtype)

    @classmethod
    def tiny(cls, seed: int = 0) -> "BaselineVLM":
        from medic_ad.models.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl

        model, processor = build_tiny_qwen2_5_vl(seed=seed)
        return cls(Backbone(model=model, processor=processor, source="tiny"))

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def prepare(self, examples: Sequence[ChatExample]) -> dict[str, torch.Tensor]:
        """Model inputs for examples whose images are PIL images."""
        return self.processor(examples, use_diff=False)

    def _batch(self, examples: Sequence[ChatExample]) -> dict[str, torch.Tensor]:
        batch = self.prepare([ChatExample([load_pil(x) for x in ex.images], ex.question) for ex in examples])
        return {k: batch[k].to(self.device) for k in _MODEL_KEYS}

    def _generate_rows(self, inputs: dict[str, torch.Tensor], max_new_tokens: int,
                       logits_processor: LogitsProcessorList | None = None) -> list[list[int]]:
        generated = self.backbone.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                           logits_processor=logits_processor)
        return generated[:, inputs["input_ids"].shape[1]:].tolist()

    @torch.no_grad()
    def choose(self, examples: Sequence[ChatExample], options: Sequence[str], *, max_new_tokens: int = 8,
               force: bool = True, heatmaps: bool = False) -> list[Choice]:
        if heatmaps:
            raise ValueError("a bare backbone has no heatmap decoder; grounding needs a MEDIC-AD checkpoint")
        inputs = self._batch(examples)
        out = generate_choice(lambda processors, n: self._generate_rows(inputs, n, processors),
                              head=self.backbone.get_output_embeddings(), processor=self.processor,
                              choices=option_tokens(self.processor, options),
                              max_new_tokens=max_new_tokens, completions=list(options) if force else None,
                              force=force)
        return [Choice(answer=a, chosen=int(c), probs=p.tolist())
                for a, c, p in zip(out.answers, out.chosen, out.probs)]

    @torch.no_grad()
    def answer(self, examples: Sequence[ChatExample], *, max_new_tokens: int = 32) -> list[str]:
        rows = self._generate_rows(self._batch(examples), max(max_new_tokens, 1))
        return [self.processor.decode(r) for r in rows]
