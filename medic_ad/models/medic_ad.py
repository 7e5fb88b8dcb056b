"""MEDIC-AD: a Qwen2.5-VL backbone composed with the Detect, Compare and Explain modules.

Paper: "Towards Medical Vision-Language Model's Clinical Intelligence" (MEDIC-AD). The backbone is
used as it is; MEDIC-AD hooks in at the image features (soft prompts, tapped blocks, f_p(V*)) and at
``inputs_embeds`` (``<Ano>``/``<Diff>`` rows written over their pad tokens), and passes ``input_ids``
alongside so M-RoPE positions and masks still derive from the ids (design doc §6).

:class:`MedicAD` composes finished parts (``builders.build_medic_ad`` makes them); checkpoint files are
``models.checkpoint``; the user API (``detect`` / ``compare`` / ``explain``) is the shared one of
``models.interface``, on top of :meth:`MedicAD.choose`; decoding is ``models.decoding``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from medic_ad.data.templates import ChatExample
from medic_ad.models.checkpoint import load_checkpoint, save_checkpoint
from medic_ad.models.components.anomaly_processor import AnomalyMaps, AnomalyProcessor
from medic_ad.models.components.diff_processor import DiffProcessor
from medic_ad.models.components.heatmap_decoder import HeatmapDecoder
from medic_ad.models.components.qformer import group_indices
from medic_ad.models.config import MedicADConfig
from medic_ad.models.decoding import ChoiceAnswers, generate_choice, option_tokens
from medic_ad.models.interface import Choice, MedicalVLM, load_pil, register_model
from medic_ad.models.qwen2_5_vl.backbone import (Backbone, VisionFeatures, VisionTap, check_attn_implementation,
                                                 load_backbone)
from medic_ad.models.qwen2_5_vl.processing import IGNORE_INDEX
from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl

__all__ = ["HEATMAP_PIXELS_PER_CALL", "MedicAD", "MedicADOutput", "choice_key"]

# The heatmap decoder's full-resolution convolutions cost more per pixel in large batched calls on CPU
# (oneDNN's backward on large tensors) than in small ones, while small images gain from batching; so one
# decoder call takes at most this many pixels: eight 168² images, or one 448² image (docs/model.md,
# "Heatmap decoder batching").
HEATMAP_PIXELS_PER_CALL = 8 * 168 * 168


def choice_key(options: Sequence[str]) -> str:
    """The key of a set of options in ``MedicADConfig.choice_bias`` (the options in their order)."""
    return " | ".join(options)


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
class _Encoded:
    """What one vision pass computed for a batch: the LLM's ``<Ano>``/``<Diff>`` inputs and the anomaly maps."""

    feats: VisionFeatures
    ano_tokens: torch.Tensor
    maps: list[AnomalyMaps]
    diff_tokens: torch.Tensor | None


@register_model("medic_ad")
class MedicAD(nn.Module, MedicalVLM):
    """The composed model. Build it with :meth:`tiny`, :meth:`from_backbone` or :meth:`from_pretrained`
    (or hand finished parts to the constructor, as ``builders.build_medic_ad`` does)."""

    has_heatmaps = True

    def __init__(self, *, backbone: Backbone, config: MedicADConfig, anomaly: AnomalyProcessor,
                 diff: DiffProcessor, heatmap: HeatmapDecoder, feature_layers: Sequence[int],
                 prompt_layers: Sequence[int]) -> None:
        super().__init__()
        self.config = config
        self.backbone_source = backbone.source
        self.processor = backbone.processor
        self.backbone = backbone.model
        self.feature_layers, self.prompt_layers = list(feature_layers), list(prompt_layers)
        self.anomaly = anomaly
        self.diff = diff
        self.heatmap = heatmap
        self.tap = VisionTap(self.backbone.model.visual)
        self.stage = 0
        self.set_stage(1)
        self.eval()

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def tiny(cls, seed: int = 0, *, backbone: TinyBackboneConfig | None = None, attn_implementation: str = "sdpa",
             **overrides: Any) -> "MedicAD":
        """Offline MEDIC-AD on a random tiny Qwen2.5-VL (tests, demo)."""
        from medic_ad.models.builders import build_medic_ad

        model, processor = build_tiny_qwen2_5_vl(backbone, seed=seed)
        model.set_attn_implementation(check_attn_implementation(attn_implementation))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            return build_medic_ad(Backbone(model=model, processor=processor, source="tiny"),
                                  MedicADConfig.tiny(**overrides))

    @classmethod
    def from_backbone(
        cls, path: str | Path, *, config: MedicADConfig | None = None, dtype: str | torch.dtype | None = "auto",
        device: str = "cpu", seed: int = 0, attn_implementation: str = "sdpa",
    ) -> "MedicAD":
        """Fresh MEDIC-AD modules on a local Qwen2.5-VL-architecture folder (e.g. Lingshu-7B)."""
        from medic_ad.models.builders import build_medic_ad

        backbone = load_backbone(path, dtype=dtype, device=device, attn_implementation=attn_implementation)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_medic_ad(backbone, config or MedicADConfig())
        return model.to(device)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu",
                        dtype: str | torch.dtype | None = "auto", merge_lora: bool = False,
                        attn_implementation: str = "sdpa") -> "MedicAD":
        """Load a folder written by :meth:`save_pretrained` (safetensors only, exact round trip).

        ``merge_lora=True`` folds LoRA into the weights (:meth:`merge_lora`): for inference only.
        """
        return load_checkpoint(directory, device=device, dtype=dtype, merge_lora=merge_lora,
                               attn_implementation=attn_implementation)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", dtype: Any = "auto") -> "MedicAD":
        return cls.from_pretrained(path, device=device, dtype=dtype)

    def save_pretrained(self, directory: str | Path, *, save_backbone: bool | None = None,
                        extra: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint (``models.checkpoint``) atomically; the backbone is referenced by path, or
        written inside when it has no folder on disk or ``save_backbone=True``."""
        return save_checkpoint(self, directory, save_backbone=save_backbone, extra=extra)

    def for_inference(self) -> "MedicAD":
        """LoRA folded into the weights (:meth:`merge_lora`); ``set_stage(1|2)`` takes it out again."""
        return self.merge_lora()

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

    def external_parameters(self) -> list[tuple[nn.Module, nn.Parameter]]:
        """Parameters read outside their own module's forward, with the module that reads them: the soft
        prompts go into the vision tower from :meth:`encode_images`. DeepSpeed ZeRO-3 gathers a parameter only
        in its module's forward unless told (``deepspeed.zero.register_external_parameter``)."""
        return [(self, self.anomaly.soft_prompts)]

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
            inputs = dict(
                input_ids=input_ids,
                inputs_embeds=embeds,
                attention_mask=attention_mask.to(device),
                mm_token_type_ids=mm_token_type_ids.to(device),
                image_grid_thw=image_grid_thw.to(device),
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(feats.projected))},
                use_cache=False,
            )
            if labels is None:
                out.logits = self.backbone(**inputs, logits_to_keep=logits_to_keep).logits
            else:
                out.loss = self.supervised_lm_loss(self.backbone.model(**inputs).last_hidden_state, labels.to(device))
        return out

    def supervised_lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy with the LM head applied only where a label is supervised.

        The loss of the backbone's own ``labels=`` path (logits ``[:, :-1]`` against labels ``[:, 1:]``,
        mean over the positions that are not ``IGNORE_INDEX``), without its (batch, seq, vocab) logits:
        at the 7B shape those are 152k floats for every image token although only answer tokens are
        scored. ``logits`` stays None on this path.
        """
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        rows = hidden[:, :-1][keep]
        logits = self.backbone.get_output_embeddings()(rows).float()
        return F.cross_entropy(logits, targets[keep])

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


    # ------------------------------------------------------------------ inference
    def prepare(self, examples: Sequence[ChatExample], *, with_answers: bool = False) -> dict[str, torch.Tensor]:
        """Model inputs for examples whose images are PIL images (the processor's batch)."""
        return self.processor(examples, use_diff=self.config.use_diff, with_answers=with_answers)

    def _encode(self, batch: dict[str, torch.Tensor]) -> _Encoded:
        """One vision pass: features, ``<Ano>`` tokens, anomaly maps and ``<Diff>`` tokens."""
        feats = self.encode_images(batch["pixel_values"], batch["image_grid_thw"])
        ano, maps = self.anomaly(feats.layers, feats.projected)
        counts = [int(c) for c in batch["images_per_sample"].tolist()]
        return _Encoded(feats=feats, ano_tokens=ano, maps=maps, diff_tokens=self._diff_tokens(counts, feats, maps))

    def _generate_rows(self, batch: dict[str, torch.Tensor], encoded: _Encoded, *, max_new_tokens: int,
                       logits_processor: LogitsProcessorList | None = None) -> list[list[int]]:
        """Greedy new token ids per row from the backbone's ``generate`` over an encoded batch."""
        embeds = self.build_inputs_embeds(batch["input_ids"], encoded.ano_tokens, encoded.diff_tokens)
        generated = self.backbone.generate(
            input_ids=batch["input_ids"],
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch["image_grid_thw"],
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(encoded.feats.projected))},
            max_new_tokens=max_new_tokens,
            do_sample=False,
            logits_processor=logits_processor,
        )
        new = generated[:, batch["input_ids"].shape[1]:] if generated.shape[1] > batch["input_ids"].shape[1] else generated
        return new.tolist()

    @torch.no_grad()
    def next_token_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the first answer token, one prefill per sample (left padding: last position)."""
        out = self.forward(**batch, logits_to_keep=1)
        return out.logits[:, -1].float()

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], *, max_new_tokens: int = 32) -> list[str]:
        """Greedy answers for a prepared batch: one vision pass, then the backbone's ``generate``."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        rows = self._generate_rows(batch, self._encode(batch), max_new_tokens=max(max_new_tokens, 1))
        return [self.processor.decode(r) for r in rows]

    @torch.no_grad()
    def generate_choice(
        self, batch: dict[str, torch.Tensor], choices: Sequence[int], *, max_new_tokens: int = 8,
        completions: Sequence[str] | None = None, force: bool = True, encoded: _Encoded | None = None,
        bias: Sequence[float] | None = None,
    ) -> ChoiceAnswers:
        """Score the ``choices`` tokens as the first answer token and answer, in one ``generate``
        (:func:`~medic_ad.models.decoding.generate_choice`): one vision pass and one prefill."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        encoded = encoded or self._encode(batch)
        return generate_choice(
            lambda processors, n: self._generate_rows(batch, encoded, max_new_tokens=n, logits_processor=processors),
            head=self.backbone.get_output_embeddings(), processor=self.processor, choices=choices,
            max_new_tokens=max_new_tokens, completions=completions, force=force, bias=bias)

    @torch.no_grad()
    def choose(self, examples: Sequence[ChatExample], options: Sequence[str], *, max_new_tokens: int = 8,
               force: bool = True, heatmaps: bool = False) -> list[Choice]:
        """The interface's multiple choice: the options scored and answered in one ``generate``, and the
        anomaly maps (and heatmaps) of the same vision pass at each input image's size."""
        pils = [[load_pil(x) for x in ex.images] for ex in examples]
        batch = self.prepare([ChatExample(images, ex.question) for images, ex in zip(pils, examples)])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        encoded = self._encode(batch)
        out = self.generate_choice(batch, option_tokens(self.processor, options), max_new_tokens=max_new_tokens,
                                   completions=list(options) if force else None, force=force, encoded=encoded,
                                   bias=self.config.choice_bias.get(choice_key(options)))
        sizes = [(im.height, im.width) for images in pils for im in images]
        amaps = [_at_size((m.anomaly.float() + 1) / 2, size) for m, size in zip(encoded.maps, sizes)]
        heats = None
        if heatmaps:
            logits = self._heatmaps(encoded.feats, encoded.ano_tokens, encoded.maps,
                                    self.unpatchify(batch["pixel_values"], batch["image_grid_thw"]))
            heats = [_at_size(torch.sigmoid(x.float()), size) for x, size in zip(logits, sizes)]
        rows, start = [], 0
        for i, images in enumerate(pils):
            end = start + len(images)
            rows.append(Choice(answer=out.answers[i], chosen=int(out.chosen[i]), probs=out.probs[i].tolist(),
                               anomaly_maps=amaps[start:end], heatmaps=None if heats is None else heats[start:end]))
            start = end
        return rows

    @torch.no_grad()
    def answer(self, examples: Sequence[ChatExample], *, max_new_tokens: int = 32) -> list[str]:
        """The interface's free-text answers (greedy)."""
        batch = self.prepare([ChatExample([load_pil(x) for x in ex.images], ex.question) for ex in examples])
        return self.generate(batch, max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------ weights
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


def _at_size(values: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map in [0, 1] resized (bilinear) to ``size`` = (height, width), float32 numpy."""
    if tuple(values.shape) != tuple(size):  # at its own size bilinear resampling is the identity: skipped
        values = F.interpolate(values[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return values.clamp(0, 1).cpu().numpy().astype(np.float32, copy=False)
