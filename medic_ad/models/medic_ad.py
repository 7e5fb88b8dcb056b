"""MEDIC-AD: a Qwen2.5-VL backbone composed with the Detect, Compare and Explain modules.

Paper: "Towards Medical Vision-Language Model's Clinical Intelligence" (MEDIC-AD). The backbone is
used as it is; MEDIC-AD hooks in at the image features (soft prompts, tapped blocks, f_p(V*)) and at
``inputs_embeds`` (``<Ano>``/``<Diff>`` rows written over their pad tokens), and passes ``input_ids``
alongside so M-RoPE positions and masks still derive from the ids (design doc §6).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from medic_ad.data.templates import (CHANGE_LETTER, CHANGE_QUESTION, DETECTION_ANSWERS, DETECTION_PROMPT,
                                     choice_answer, format_options)
from medic_ad.data.templates import CHANGE_OPTIONS as CHANGE_OPTION_TEXT  # letter -> option text
from medic_ad.models.builders import (
    build_anomaly_processor,
    build_diff_processor,
    build_heatmap_decoder,
    inject_lora,
    resolve_layers,
)
from medic_ad.models.components.anomaly_processor import AnomalyMaps
from medic_ad.models.components.qformer import group_indices
from medic_ad.models.config import MedicADConfig
from medic_ad.models.qwen2_5_vl.backbone import (Backbone, BackboneLoadError, VisionFeatures, VisionTap,
                                                backbone_fingerprint, load_backbone)
from medic_ad.models.qwen2_5_vl.processing import ChatExample
from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl

CHANGE_OPTIONS = {letter: change for change, letter in CHANGE_LETTER.items()}  # "A" -> "no change", ...
CONFIG_FILE = "medic_ad_config.json"
WEIGHTS_FILE = "medic_ad.safetensors"
FORMAT_VERSION = 1
STAGES = (0, 1, 2, 3)


def change_prompt(region: str | None = None) -> str:
    """MMXU-style multiple-choice question about a prior/current pair (the data templates' wording)."""
    return f"{CHANGE_QUESTION.format(region=region or 'abnormality')} {format_options(CHANGE_OPTION_TEXT)}"


@dataclass
class MedicADOutput(ModelOutput):
    """Everything one forward pass gives.

    loss: language loss on answer tokens (when labels were given).
    logits: LLM logits (None when the LLM was skipped).
    ano_tokens: (n_images, k, llm_dim). diff_tokens: (n_pairs, m, llm_dim) or None.
    anomaly_maps: per image :class:`AnomalyMaps` (per-layer sigmoid maps and the fused map).
    heatmap_logits: per image (H, W) decoder logits at the processed input size, when asked for.
    grids: per image patch grid (h, w).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    ano_tokens: torch.Tensor | None = None
    diff_tokens: torch.Tensor | None = None
    anomaly_maps: list[AnomalyMaps] | None = None
    heatmap_logits: list[torch.Tensor] | None = None
    grids: list[tuple[int, int]] | None = None


@dataclass
class DetectionResult:
    answer: str
    abnormal: bool
    score: float


@dataclass
class ComparisonResult:
    answer: str
    label: str
    probs: dict[str, float]


@dataclass
class ChoiceAnswers:
    """What :meth:`MedicAD.generate_choice` gives per row.

    probs: (B, k) softmax over the k choice tokens' first-answer logits (float32, CPU).
    chosen: (B,) index into the choices of the token the answer starts with (the argmax).
    answers: the decoded answers.
    """

    probs: torch.Tensor
    chosen: torch.Tensor
    answers: list[str]


class ConstrainedChoice(LogitsProcessor):
    """Multiple-choice decoding: score the choices at the first answer position, then answer with one.

    At the first generated position: softmax over the choice tokens' logits, and their argmax is forced.
    The probabilities come from the logits the LM head produced (captured by :meth:`watch`), not from
    the scores ``generate`` hands over: processors of the checkpoint's generation config (e.g. a
    ``repetition_penalty``) run before custom ones and would otherwise change them. The forcing runs
    last, so it wins. With ``completions`` (each choice's whole answer, first token included, then
    ``end``) the later positions are forced to the chosen answer too, so the text cannot contradict the
    decision; without, they are left to the model. One instance serves one ``generate`` call.
    """

    def __init__(self, choices: Sequence[int], completions: Sequence[Sequence[int]] | None = None,
                 end: int | None = None) -> None:
        self.choices = [int(c) for c in choices]
        if completions is not None:
            if len(completions) != len(self.choices) or any(
                    not seq or int(seq[0]) != c for seq, c in zip(completions, self.choices)):
                raise ValueError("each completion must start with its choice token, one completion per choice")
            if end is None:
                raise ValueError("completions need the end token that closes an answer")
            completions = [[int(t) for t in seq] + [int(end)] for seq in completions]
        self.completions = completions
        self.probs: torch.Tensor | None = None
        self.chosen: torch.Tensor | None = None
        self._raw: torch.Tensor | None = None
        self._start = 0

    @contextmanager
    def watch(self, head: nn.Module) -> Iterator["ConstrainedChoice"]:
        """Keep the last-position logits of ``head``'s first call (the prefill) while inside."""

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self._raw is None:
                self._raw = output[:, -1].float()

        handle = head.register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.chosen is None:
            logits = scores if self._raw is None else self._raw.to(scores.device)
            self.probs = torch.softmax(logits[:, self.choices], -1)
            self.chosen = self.probs.argmax(-1)  # ties: the first choice, so P(first) >= 0.5 <=> chosen == 0
            self._start = input_ids.shape[1]
            token = torch.tensor(self.choices, device=scores.device)[self.chosen]
        elif self.completions is None:
            return scores
        else:
            step = input_ids.shape[1] - self._start
            token = torch.tensor([seq[min(step, len(seq) - 1)] for seq in
                                  (self.completions[c] for c in self.chosen.tolist())], device=scores.device)
        return torch.full_like(scores, float("-inf")).scatter_(1, token[:, None], 0.0)


# The decoder's full-resolution convolutions: on 2 CPU cores a batch of eight 168² images trains 1.3× faster
# in one call than one at a time, but four 448² images train 1.8× slower (mkldnn's backward on large
# tensors); so a call takes at most this many pixels (eight 168² images, one 448² image).
HEATMAP_PIXELS_PER_CALL = 8 * 168 * 168


class MedicAD(nn.Module):
    """The composed model. Build it with :meth:`tiny`, :meth:`from_backbone` or :meth:`from_pretrained`."""

    def __init__(self, *, backbone: Backbone, config: MedicADConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone_source = backbone.source
        self.processor = backbone.processor
        self.backbone = backbone.model
        vision_cfg = self.backbone.config.vision_config
        llm_dim = int(self.backbone.config.text_config.hidden_size)
        vision_dim = int(vision_cfg.hidden_size)
        self.feature_layers, self.prompt_layers = resolve_layers(config, vision_cfg)
        self.anomaly = build_anomaly_processor(
            config, vision_dim=vision_dim, llm_dim=llm_dim, num_layers=len(self.feature_layers),
            prompt_layers=len(self.prompt_layers),
        )
        self.diff = build_diff_processor(config, llm_dim=llm_dim)
        self.heatmap = build_heatmap_decoder(
            config, vision_dim=vision_dim, llm_dim=llm_dim, num_layers=len(self.feature_layers),
            merge_size=int(vision_cfg.spatial_merge_size),
        )
        inject_lora(config, self.backbone)
        self.processor.num_ano_tokens = self.anomaly.num_tokens
        self.processor.num_diff_tokens = self.diff.num_tokens if config.use_diff else 0
        self.tap = VisionTap(self.backbone.model.visual)
        self._backbone_cache: Backbone | None = None
        self.stage = 0
        self.set_stage(1)
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def tiny(cls, seed: int = 0, *, backbone: TinyBackboneConfig | None = None, **overrides: Any) -> "MedicAD":
        """Offline MEDIC-AD on a random tiny Qwen2.5-VL (tests, demo)."""
        model, processor = build_tiny_qwen2_5_vl(backbone, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            return cls(backbone=Backbone(model=model, processor=processor, source="tiny"),
                       config=MedicADConfig.tiny(**overrides))

    @classmethod
    def from_backbone(
        cls, path: str | Path, *, config: MedicADConfig | None = None, dtype: str | torch.dtype | None = "auto",
        device: str = "cpu", seed: int = 0,
    ) -> "MedicAD":
        """Fresh MEDIC-AD modules on a local Qwen2.5-VL-architecture folder (e.g. Lingshu-7B)."""
        backbone = load_backbone(path, dtype=dtype, device=device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(backbone=backbone, config=config or MedicADConfig())
        return model.to(device)

    # ------------------------------------------------------------------ stages
    def lora_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.backbone.named_parameters() if "lora_" in n}

    def _lora_layers(self) -> list[LoraLayer]:
        return [m for m in self.backbone.modules() if isinstance(m, LoraLayer)]

    @property
    def lora_merged(self) -> bool:
        """Whether the LoRA deltas are folded into the LLM's projections (see :meth:`merge_lora`)."""
        return any(layer.merged for layer in self._lora_layers())

    @torch.no_grad()
    def merge_lora(self) -> "MedicAD":
        """Fold LoRA into the projection weights (peft ``LoraLayer.merge``) for inference.

        Same logits to float rounding, without the adapters' extra matmuls. Undone by
        :meth:`unmerge_lora`, and by ``set_stage(1)``/``set_stage(2)`` (training needs the adapters);
        saving writes the same checkpoint as unmerged. A no-op without LoRA or when already merged.
        """
        for layer in self._lora_layers():
            if not layer.merged:
                layer.merge()
        return self

    @torch.no_grad()
    def unmerge_lora(self) -> "MedicAD":
        """Take the LoRA deltas back out of the projection weights (peft ``LoraLayer.unmerge``)."""
        for layer in self._lora_layers():
            if layer.merged:
                layer.unmerge()
        return self

    @contextmanager
    def _lora_unmerged(self) -> Iterator[None]:
        """Unmerged inside (the base weights as they were, to float rounding), merged again after."""
        merged = self.lora_merged
        if merged:
            self.unmerge_lora()
        try:
            yield
        finally:
            if merged:
                self.merge_lora()

    def set_stage(self, stage: int) -> None:
        """Make exactly the parameters of ``stage`` trainable.

        1: soft prompts, system tokens, Anomaly Q-Former + MLP, LLM adaptation.
        2: Diff Q-Former + MLP, LLM adaptation.  3: heatmap decoder only.
        Stages 1 and 2 train LoRA, so a merged model is unmerged first.
        """
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
        if stage in (1, 2):
            self.unmerge_lora()
        for p in self.parameters():
            p.requires_grad_(False)
        module = {1: self.anomaly, 2: self.diff, 3: self.heatmap}[stage]
        for p in module.parameters():
            p.requires_grad_(True)
        if stage in (1, 2):
            if self.config.llm_adaptation == "lora":
                for p in self.lora_parameters().values():
                    p.requires_grad_(True)
            elif self.config.llm_adaptation == "full":
                for n, p in self.backbone.model.language_model.named_parameters():
                    if "embed_tokens" not in n:
                        p.requires_grad_(True)
        self.stage = stage

    def trainable_parameter_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------ forward
    @property
    def device(self) -> torch.device:
        return next(self.anomaly.parameters()).device

    def encode_images(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> VisionFeatures:
        """Vision tower with soft prompts; tapped layers in raster order and f_p(V*)."""
        prompts = self.anomaly.prompts_for(self.prompt_layers)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.anomaly.soft_prompts.requires_grad):
            return self.tap(pixel_values.to(self.device), image_grid_thw.to(self.device), prompts=prompts,
                            capture=self.feature_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        mm_token_type_ids: torch.Tensor,
        images_per_sample: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        compute_lm: bool = True,
        compute_heatmap: bool = False,
        logits_to_keep: int = 0,
        **_: Any,
    ) -> MedicADOutput:
        device = self.device
        counts = [int(c) for c in images_per_sample.tolist()]
        if sum(counts) != image_grid_thw.shape[0]:
            raise ValueError(f"images_per_sample sums to {sum(counts)} but {image_grid_thw.shape[0]} images were given")
        feats = self.encode_images(pixel_values, image_grid_thw)
        ano_tokens, maps = self.anomaly(feats.layers, feats.projected)
        diff_tokens = self._diff_tokens(counts, feats, maps)
        out = MedicADOutput(ano_tokens=ano_tokens, diff_tokens=diff_tokens, anomaly_maps=maps, grids=feats.grids)
        if compute_heatmap:
            out.heatmap_logits = self._heatmaps(feats, ano_tokens, maps, self.unpatchify(pixel_values, image_grid_thw))
        if compute_lm:
            input_ids = input_ids.to(device)
            embeds = self.build_inputs_embeds(input_ids, ano_tokens, diff_tokens)
            lm = self.backbone(
                input_ids=input_ids,
                inputs_embeds=embeds,
                attention_mask=attention_mask.to(device),
                mm_token_type_ids=mm_token_type_ids.to(device),
                image_grid_thw=image_grid_thw.to(device),
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(feats.projected))},
                labels=None if labels is None else labels.to(device),
                logits_to_keep=logits_to_keep,
                use_cache=False,
            )
            out.loss, out.logits = lm.loss, lm.logits
        return out

    def unpatchify(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """The processed images (C, H, W) back from Qwen2.5-VL's packed patch rows (first temporal frame).

        The image processor writes each image's patches as (t, h/m, w/m, m, m, C, T, P, P) rows; this
        undoes that order, so the heatmap decoder sees the pixels its map is drawn on.
        """
        vision = self.backbone.config.vision_config
        m, p = int(vision.spatial_merge_size), int(vision.patch_size)
        t_size = int(getattr(vision, "temporal_patch_size", 2))
        images, start = [], 0
        for t, h, w in image_grid_thw.tolist():
            rows = pixel_values[start:start + t * h * w]
            start += t * h * w
            x = rows.reshape(t, h // m, w // m, m, m, -1, t_size, p, p)[0, ..., 0, :, :]  # (h/m, w/m, m, m, C, P, P)
            images.append(x.permute(4, 0, 2, 5, 1, 3, 6).reshape(x.shape[4], h * p, w * p).to(self.device))
        return images

    def _heatmaps(self, feats: VisionFeatures, ano_tokens: torch.Tensor, maps: list[AnomalyMaps],
                  images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per image (H, W) heatmap logits. Images that share a patch grid go through the decoder together,
        up to ``HEATMAP_PIXELS_PER_CALL`` pixels a call."""
        logits: list[torch.Tensor | None] = [None] * len(images)
        for grid, members in group_indices(tuple(grid) for grid in feats.grids).items():
            size = self._pixel_size(grid)
            per_call = max(1, HEATMAP_PIXELS_PER_CALL // (size[0] * size[1]))
            for start in range(0, len(members), per_call):
                idx = members[start:start + per_call]
                batch = self.heatmap(
                    layers=[torch.stack(layer) for layer in zip(*(feats.layers[i] for i in idx))],
                    projected=torch.stack([feats.projected[i] for i in idx]),
                    ano_tokens=ano_tokens[idx],
                    anomaly_map=torch.stack([maps[i].anomaly for i in idx]),
                    out_size=size,
                    image=torch.stack([images[i] for i in idx]),
                )
                for i, heat in zip(idx, batch):
                    logits[i] = heat
        return logits

    def _pixel_size(self, grid: tuple[int, int]) -> tuple[int, int]:
        return grid[0] * self.tap.patch_size, grid[1] * self.tap.patch_size

    def _diff_tokens(self, counts: list[int], feats: VisionFeatures, maps: list[AnomalyMaps]) -> torch.Tensor | None:
        if not self.config.use_diff:
            return None
        starts = np.cumsum([0] + counts[:-1]).tolist()
        pairs = [(s, s + 1) for s, c in zip(starts, counts) if c == 2]
        if not pairs:
            return None
        return self.diff(
            [maps[p].modulated for p, _ in pairs],
            [maps[c].modulated for _, c in pairs],
            [feats.projected[p] for p, _ in pairs],
            [feats.projected[c] for _, c in pairs],
            [maps[p].burden_maps for p, _ in pairs],
            [maps[c].burden_maps for _, c in pairs],
        )

    def build_inputs_embeds(
        self, input_ids: torch.Tensor, ano_tokens: torch.Tensor, diff_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        """Embed the ids and write the ``<Ano>``/``<Diff>`` vectors over their pad tokens (Eq. 2, 3)."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        for name, token_id, rows in (
            ("<Ano>", self.processor.ano_token_id, ano_tokens),
            ("<Diff>", self.processor.diff_token_id, diff_tokens),
        ):
            mask = input_ids == token_id
            n_slots = int(mask.sum())
            n_rows = 0 if rows is None else rows.shape[0] * rows.shape[1]
            if n_slots != n_rows:
                raise ValueError(f"{name} tokens in the text ({n_slots}) and {name} vectors ({n_rows}) do not match")
            if n_rows:
                embeds = embeds.masked_scatter(mask.unsqueeze(-1), rows.reshape(-1, rows.shape[-1]).to(embeds.dtype))
        return embeds

    # ------------------------------------------------------------------ batching helpers
    def prepare(self, examples: Sequence[ChatExample], *, with_answers: bool = False) -> dict[str, torch.Tensor]:
        return self.processor(examples, use_diff=self.config.use_diff, with_answers=with_answers)

    @torch.no_grad()
    def next_token_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the first answer token, one prefill per sample (left padding: last position)."""
        out = self.forward(**batch, logits_to_keep=1)
        return out.logits[:, -1].float()

    @torch.no_grad()
    def generate(
        self, batch: dict[str, torch.Tensor], *, max_new_tokens: int = 32, forced_first: torch.Tensor | None = None
    ) -> list[str]:
        """Greedy answers. ``forced_first`` (B,) fixes each answer's first token (score-consistent answers).

        To score choice tokens and answer in one pass, use :meth:`generate_choice`.
        """
        batch = {k: v.to(self.device) for k, v in batch.items()}
        prefix = []
        if forced_first is not None:
            forced_first = forced_first.to(self.device)
            batch = dict(batch)
            batch["input_ids"] = torch.cat([batch["input_ids"], forced_first[:, None]], 1)
            batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(forced_first[:, None])], 1)
            batch["mm_token_type_ids"] = torch.cat(
                [batch["mm_token_type_ids"], torch.zeros_like(forced_first[:, None])], 1)
            prefix = forced_first[:, None].tolist()
            max_new_tokens -= 1
        if max_new_tokens <= 0:
            return [self.processor.decode(p) for p in prefix]
        rows = self._generate_rows(batch, max_new_tokens=max_new_tokens)
        if prefix:
            rows = [p + r for p, r in zip(prefix, rows)]
        return [self.processor.decode(r) for r in rows]

    @torch.no_grad()
    def generate_choice(
        self, batch: dict[str, torch.Tensor], choices: Sequence[int], *, max_new_tokens: int = 8,
        completions: Sequence[str] | None = None,
    ) -> ChoiceAnswers:
        """Score the ``choices`` tokens as the first answer token and answer, in one ``generate``.

        ``probs`` = softmax over the choices' logits at the first answer position, the same numbers as
        from :meth:`next_token_logits`; each answer starts with the argmax choice (forced by
        :class:`ConstrainedChoice`). With ``completions`` (each choice's whole answer text, e.g.
        ``"C: Worsened"``) the answer is the chosen one verbatim, cut at ``max_new_tokens``; without,
        the tokens after the choice are greedy. One vision pass and one prefill.
        """
        batch = {k: v.to(self.device) for k, v in batch.items()}
        sequences = None if completions is None else [self.processor.answer_token_ids(c) for c in completions]
        choice = ConstrainedChoice(choices, sequences, end=self.processor.end_token_id)
        with choice.watch(self.backbone.get_output_embeddings()):
            rows = self._generate_rows(batch, max_new_tokens=max(max_new_tokens, 1),
                                       logits_processor=LogitsProcessorList([choice]))
        if choice.probs is None:
            raise RuntimeError("generate produced no first step; no choice was scored")
        return ChoiceAnswers(probs=choice.probs.float().cpu(), chosen=choice.chosen.cpu(),
                             answers=[self.processor.decode(r) for r in rows])

    def _generate_rows(self, batch: dict[str, torch.Tensor], *, max_new_tokens: int,
                       logits_processor: LogitsProcessorList | None = None) -> list[list[int]]:
        """Greedy new token ids per row: one vision pass, then the backbone's ``generate``."""
        feats = self.encode_images(batch["pixel_values"], batch["image_grid_thw"])
        ano, maps = self.anomaly(feats.layers, feats.projected)
        counts = [int(c) for c in batch["images_per_sample"].tolist()]
        embeds = self.build_inputs_embeds(batch["input_ids"], ano, self._diff_tokens(counts, feats, maps))
        generated = self.backbone.generate(
            input_ids=batch["input_ids"],
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch["image_grid_thw"],
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(feats.projected))},
            max_new_tokens=max_new_tokens,
            do_sample=False,
            logits_processor=logits_processor,
        )
        new = generated[:, batch["input_ids"].shape[1]:] if generated.shape[1] > batch["input_ids"].shape[1] else generated
        return new.tolist()

    # ------------------------------------------------------------------ user API
    def detect(self, image, *, max_new_tokens: int = 8, batch_size: int = 8):
        """Is there any abnormality? ``score`` = P(Yes) against P(No) of the first answer token; the
        answer is the one the score chose ("Yes." / "No."), so ``score >= 0.5`` ⇔ ``abnormal`` always holds.
        One ``generate`` per batch scores and answers (:meth:`generate_choice`).

        Accepts a path, PIL image, array or MedicalImage, or a list of them (then returns a list).
        """
        items, single = _as_list(image)
        pil = [_load_pil(x) for x in items]
        yes = self.processor.first_token_id("Yes")
        no = self.processor.first_token_id("No")
        answers = [DETECTION_ANSWERS["abnormal"], DETECTION_ANSWERS["normal"]]
        results: list[DetectionResult] = []
        for start in range(0, len(pil), batch_size):
            chunk = pil[start:start + batch_size]
            batch = self.prepare([ChatExample([im], DETECTION_PROMPT) for im in chunk])
            out = self.generate_choice(batch, [yes, no], max_new_tokens=max_new_tokens, completions=answers)
            results += [DetectionResult(answer=a, abnormal=c == 0, score=float(s))
                        for a, c, s in zip(out.answers, out.chosen.tolist(), out.probs[:, 0].tolist())]
        return results[0] if single else results

    def compare(self, prior, current, *, region: str | None = None, max_new_tokens: int = 8, batch_size: int = 8):
        """Worsened / improved / no change between a prior and a current study (MMXU choice A/B/C); the
        answer is the most probable option verbatim ("C: Worsened").

        ``prior`` and ``current`` are one study each, or two lists of equal length (then a list comes back,
        ``batch_size`` pairs per ``generate``).
        """
        priors, single = _as_list(prior)
        currents, _ = _as_list(current)
        if len(priors) != len(currents):
            raise ValueError(f"{len(priors)} prior studies but {len(currents)} current ones")
        pairs = [(_load_pil(p, role="prior"), _load_pil(c, role="current")) for p, c in zip(priors, currents)]
        letters = list(CHANGE_OPTIONS)
        ids = [self.processor.first_token_id(letter) for letter in letters]
        answers = [choice_answer(k, CHANGE_OPTION_TEXT) for k in letters]
        results: list[ComparisonResult] = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = self.prepare([ChatExample([p, c], change_prompt(region)) for p, c in chunk])
            out = self.generate_choice(batch, ids, max_new_tokens=max_new_tokens, completions=answers)
            results += [ComparisonResult(answer=answer, label=CHANGE_OPTIONS[letters[best]],
                                         probs={CHANGE_OPTIONS[k]: float(v) for k, v in zip(letters, probs.tolist())})
                        for answer, best, probs in zip(out.answers, out.chosen.tolist(), out.probs)]
        return results[0] if single else results

    @torch.no_grad()
    def explain(self, image, *, batch_size: int = 8):
        """Heatmap in [0, 1] (float32) at the input image's height × width; a list of images gives a list."""
        items, single = _as_list(image)
        pil = [_load_pil(x) for x in items]
        heats: list[np.ndarray] = []
        for start in range(0, len(pil), batch_size):
            chunk = pil[start:start + batch_size]
            batch = self.prepare([ChatExample([im], DETECTION_PROMPT) for im in chunk])
            out = self.forward(**batch, compute_lm=False, compute_heatmap=True)
            for im, logits in zip(chunk, out.heatmap_logits):
                heat = torch.sigmoid(logits.float())[None, None]
                heat = F.interpolate(heat, size=(im.height, im.width), mode="bilinear", align_corners=False)[0, 0]
                heats.append(heat.clamp(0, 1).cpu().numpy().astype(np.float32))
        return heats[0] if single else heats

    @torch.no_grad()
    def anomaly_map(self, image) -> np.ndarray:
        """Fused anomaly map (abnormal − normal, rescaled to [0, 1]) at the input image's size."""
        pil = _load_pil(image)
        batch = self.prepare([ChatExample([pil], DETECTION_PROMPT)])
        out = self.forward(**batch, compute_lm=False)
        amap = ((out.anomaly_maps[0].anomaly.float() + 1) / 2)[None, None]
        amap = F.interpolate(amap, size=(pil.height, pil.width), mode="bilinear", align_corners=False)[0, 0]
        return amap.clamp(0, 1).cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def module_state_dict(self) -> dict[str, torch.Tensor]:
        """MEDIC-AD's own weights: the three modules and the LoRA rows (HF keys kept under ``backbone.``)."""
        state = {}
        for prefix, module in (("anomaly", self.anomaly), ("diff", self.diff), ("heatmap", self.heatmap)):
            state.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        state.update({f"backbone.{k}": v for k, v in self.backbone.state_dict().items() if "lora_" in k})
        if self.config.llm_adaptation == "full":
            state.update({f"backbone.{k}": v for k, v in self.backbone.state_dict().items()
                          if ".language_model." in f".{k}" and "embed_tokens" not in k})
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def save_pretrained(self, directory: str | Path, *, save_backbone: bool | None = None,
                        extra: dict[str, Any] | None = None) -> Path:
        """Write ``medic_ad.safetensors`` + ``medic_ad_config.json`` atomically (a temp folder, then a rename).

        The backbone is referenced by path; a backbone with no folder on disk (the tiny one) or
        ``save_backbone=True`` is written to ``backbone/`` inside the checkpoint.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            if save_backbone is None:
                save_backbone = not Path(self.backbone_source).is_dir()
            if save_backbone:
                self.save_backbone(tmp / "backbone")
                backbone_ref = "backbone"
            else:
                backbone_ref = str(Path(self.backbone_source).resolve())
            save_file(self.module_state_dict(), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
            meta = {"format_version": FORMAT_VERSION, "backbone": backbone_ref,
                    "backbone_fingerprint": backbone_fingerprint(self.backbone), "stage": self.stage,
                    "config": self.config.to_dict(), **(extra or {})}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
            _replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    def save_backbone(self, directory: str | Path) -> None:
        """Write the backbone as an ordinary Qwen2.5-VL folder: LoRA rows left out, HF keys as they were.

        A merged model is unmerged while writing, so the folder holds the base weights (to the merge's
        float rounding: in bf16 that is up to one bf16 step; save an unmerged model for exact files).
        """
        with self._lora_unmerged():
            clean = {k.replace(".base_layer.", "."): v for k, v in self.backbone.state_dict().items()
                     if "lora_" not in k}
            self.backbone.save_pretrained(Path(directory), state_dict=clean, safe_serialization=True)
        self.processor.save_pretrained(Path(directory))

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu",
                        dtype: str | torch.dtype | None = "auto", merge_lora: bool = False) -> "MedicAD":
        """Load a folder written by :meth:`save_pretrained` (safetensors only, exact round trip).

        ``merge_lora=True`` folds LoRA into the weights (:meth:`merge_lora`): for inference only.
        """
        directory = Path(directory)
        meta = read_checkpoint_meta(directory)
        backbone_path = Path(meta["backbone"])
        if not backbone_path.is_absolute():
            backbone_path = directory / backbone_path
        try:
            config = MedicADConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{directory / CONFIG_FILE}: invalid config ({exc})") from None
        backbone = load_backbone(backbone_path, dtype=dtype, device=device)
        expected = meta.get("backbone_fingerprint")  # absent in checkpoints older than the check
        if expected is not None and backbone_fingerprint(backbone.model) != expected:
            raise ValueError(
                f"{directory}: the backbone at {backbone_path} is not the one this checkpoint was trained on "
                "(its weights differ: the folder was replaced or retrained after the checkpoint was saved). "
                "Restore that backbone, or keep checkpoints self-contained with save_pretrained(..., save_backbone=True)"
            )
        model = cls(backbone=backbone, config=config)
        weights = directory / WEIGHTS_FILE
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{weights}: unreadable or truncated weights ({exc})") from None
        model.load_module_state_dict(state, source=weights)
        model.backbone_source = str(backbone_path)
        model.to(device)
        model.set_stage(meta.get("stage", 1) if meta.get("stage", 1) in (1, 2, 3) else 1)
        model.eval()
        if merge_lora:
            model.merge_lora()
        return model

    def load_module_state_dict(self, state: dict[str, torch.Tensor], *, source: Path | str = "state") -> None:
        expected = self.module_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source}: weights do not match this MEDIC-AD config "
                f"(missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''})"
            )
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            prefix, rest = key.split(".", 1)
            groups.setdefault(prefix, {})[rest] = value
        for prefix, module in (("anomaly", self.anomaly), ("diff", self.diff), ("heatmap", self.heatmap)):
            module.load_state_dict(groups[prefix])
        if "backbone" in groups:
            with self._lora_unmerged():  # new LoRA rows: a merged model is merged again with them
                self.backbone.load_state_dict(groups["backbone"], strict=False)


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON, or one readable error naming what is wrong with the folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: MEDIC-AD checkpoint folder does not exist")
    cfg = directory / CONFIG_FILE
    if not cfg.is_file():
        raise ValueError(f"{directory}: not a MEDIC-AD checkpoint (no {CONFIG_FILE})")
    try:
        meta = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{cfg}: unreadable JSON (truncated or corrupt)") from None
    if not isinstance(meta, dict) or "backbone" not in meta or "config" not in meta:
        raise ValueError(f"{cfg}: missing 'backbone' or 'config'")
    if not (directory / WEIGHTS_FILE).is_file():
        raise ValueError(f"{directory}: no {WEIGHTS_FILE}")
    return meta


def _replace_dir(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst``; an existing ``dst`` survives until the new one is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _as_list(x) -> tuple[list, bool]:
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("no images given")
        return list(x), False
    return [x], True


def _load_pil(x, *, role: str = "image"):
    """RGB PIL image from a path, PIL image, array or MedicalImage; a clear error before any compute."""
    from medic_ad.data.io import load_image_any

    if x is None:
        raise ValueError(f"{role}: missing (None)")
    return load_image_any(x).to_pil()


__all__ = ["MedicAD", "MedicADOutput", "DetectionResult", "ComparisonResult", "ChoiceAnswers", "ConstrainedChoice",
           "CHANGE_OPTIONS", "DETECTION_PROMPT", "change_prompt", "BackboneLoadError"]
