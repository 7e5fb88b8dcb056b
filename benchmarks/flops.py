"""Analytic FLOPs of Qwen2.5-VL (+ MEDIC-AD's extra tokens) for prefill-limit shares and MFU.

Conventions (one multiply-add = 2 FLOPs; only matmuls are counted — norms, activations, RoPE,
softmax and the embedding lookup are left out, as in the usual MFU accounting):

* a linear layer with W weights applied to N rows: ``2·W·N``;
* LLM attention, causal, per layer: ``QKᵀ`` + ``AV`` over the lower triangle = ``2·T²·H·d_head``
  (T tokens of one sample; padding excluded);
* vision attention, bidirectional, per block: ``4·n²·D`` per attention segment of n patches —
  the whole image (+ soft prompts) in full-attention blocks, each window in windowed blocks;
* vision tower: patch embedding (a linear over 3·t·p·p inputs), per block ``qkv + proj + gated MLP``
  = ``4D² + 3·D·I`` weights, merger ``(4D)² + 4D·out`` on S/4 merged tokens;
* LM head: ``2·h·V`` per logits row (prefill for a decision keeps 1 row; training keeps T rows);
* LoRA (unmerged): ``2·r·(in + out)`` per adapted projection and token.

Training "model FLOPs" of stage 1 (frozen backbone, LoRA + soft prompts + Anomaly Processor trained),
recompute of gradient checkpointing *excluded*: forward of everything; backward of the part of the
graph that leads to a trainable parameter — vision blocks from the first prompted block on, the merger,
every LLM layer and the LM head: frozen linears need only the input gradient (1× their forward),
attention needs gradients of both operands (2× its forward), LoRA needs input and weight gradients
(2× its forward). Blocks before the first prompted block and the patch embedding run forward only.
The MEDIC-AD modules themselves (Q-Former over ~256 keys at width 256) are < 0.1 % of a 7B forward and
left out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class VisionShape:
    depth: int
    hidden: int
    heads: int
    intermediate: int
    out_hidden: int
    patch: int = 14
    temporal_patch: int = 2
    merge: int = 2
    window: int = 112
    fullatt: tuple[int, ...] = (7, 15, 23, 31)


QWEN2_5_VL_7B_TEXT = TextShape(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064)
QWEN2_5_VL_7B_VISION = VisionShape(depth=32, hidden=1280, heads=16, intermediate=3420, out_hidden=3584)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
BF16_PEAK_TFLOPS = {
    "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H200": 989.0,
    "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
}


def peak_tflops_for(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU from its name (longest matching key), or None when unknown."""
    best = None
    for key, value in BF16_PEAK_TFLOPS.items():
        if key.lower() in device_name.lower() and (best is None or len(key) > len(best[0])):
            best = (key, value)
    if best is None and "h100" in device_name.lower():
        return 989.0  # an H100 that does not say which: the SXM part is what clouds lend
    return best[1] if best else None


def shapes_from_hf(config) -> tuple[TextShape, VisionShape]:
    """Shapes of a transformers ``Qwen2_5_VLConfig``."""
    t, v = config.text_config, config.vision_config
    text = TextShape(hidden=t.hidden_size, layers=t.num_hidden_layers, heads=t.num_attention_heads,
                     kv_heads=t.num_key_value_heads, intermediate=t.intermediate_size, vocab=t.vocab_size)
    vision = VisionShape(depth=v.depth, hidden=v.hidden_size, heads=v.num_heads, intermediate=v.intermediate_size,
                         out_hidden=v.out_hidden_size, patch=v.patch_size, temporal_patch=v.temporal_patch_size,
                         merge=v.spatial_merge_size, window=v.window_size, fullatt=tuple(v.fullatt_block_indexes))
    return text, vision


# ------------------------------------------------------------------------------------------------ weights
def llm_projection_shapes(t: TextShape) -> dict[str, tuple[int, int]]:
    """(in, out) of every linear of one decoder layer."""
    q, kv = t.heads * t.head_dim, t.kv_heads * t.head_dim
    return {"q_proj": (t.hidden, q), "k_proj": (t.hidden, kv), "v_proj": (t.hidden, kv), "o_proj": (q, t.hidden),
            "gate_proj": (t.hidden, t.intermediate), "up_proj": (t.hidden, t.intermediate),
            "down_proj": (t.intermediate, t.hidden)}


def llm_layer_weights(t: TextShape) -> int:
    """Linear weights (no biases, no norms) of all decoder layers."""
    return t.layers * sum(i * o for i, o in llm_projection_shapes(t).values())


def lora_weights(t: TextShape, r: int, targets=LORA_TARGETS) -> int:
    return t.layers * sum(r * (i + o) for name, (i, o) in llm_projection_shapes(t).items() if name in targets)


def vision_block_weights(v: VisionShape) -> int:
    return 4 * v.hidden * v.hidden + 3 * v.hidden * v.intermediate


def vision_merger_weights(v: VisionShape) -> int:
    wide = v.hidden * v.merge * v.merge
    return wide * wide + wide * v.out_hidden


def vision_patch_weights(v: VisionShape) -> int:
    return 3 * v.temporal_patch * v.patch * v.patch * v.hidden


def backbone_params(t: TextShape, v: VisionShape) -> int:
    """Every parameter of a Qwen2.5-VL (untied embedding and LM head, q/k/v biases, RMSNorm weights; the
    vision MLP and merger with biases, the patch embedding without), as transformers builds it."""
    kv = t.kv_heads * t.head_dim
    llm = 2 * t.vocab * t.hidden + llm_layer_weights(t) + t.layers * (t.heads * t.head_dim + 2 * kv + 2 * t.hidden) \
        + t.hidden
    d, i = v.hidden, v.intermediate
    block = vision_block_weights(v) + 3 * d + d + 2 * i + d + 2 * d  # qkv, proj, gate/up, down biases; 2 norms
    wide = d * v.merge * v.merge
    merger = vision_merger_weights(v) + wide + v.out_hidden + d  # two biases, ln_q
    return llm + v.depth * block + merger + vision_patch_weights(v)


# ------------------------------------------------------------------------------------------------ vision
def window_segments(grid_h: int, grid_w: int, v: VisionShape) -> list[int]:
    """Patch counts of the attention windows of one image (as ``get_vision_window_index`` cuts them)."""
    units = v.window // v.merge // v.patch  # merge units per window side
    mh, mw = grid_h // v.merge, grid_w // v.merge
    rows = [min(units, mh - s) for s in range(0, mh, units)]
    cols = [min(units, mw - s) for s in range(0, mw, units)]
    return [r * c * v.merge * v.merge for r in rows for c in cols]


def vision_flops(grid_h: int, grid_w: int, v: VisionShape, *, prompts: int = 0, split_at: int | None = None
                 ) -> dict[str, float]:
    """Forward FLOPs of the vision tower for one image of grid_h × grid_w patches (t = 1).

    ``prompts``: MEDIC-AD soft prompts per full-attention block (extra rows there only).
    ``split_at``: block index; the result also gives the linear and attention FLOPs of blocks ≥ it
    (the part with a backward in stage 1).
    """
    s = grid_h * grid_w
    windows = window_segments(grid_h, grid_w, v)
    lin = attn = lin_after = attn_after = 0.0
    for b in range(v.depth):
        rows = s + (prompts if b in v.fullatt else 0)
        block_lin = 2.0 * vision_block_weights(v) * rows
        block_attn = 4.0 * rows * rows * v.hidden if b in v.fullatt else sum(4.0 * n * n * v.hidden for n in windows)
        lin += block_lin
        attn += block_attn
        if split_at is not None and b >= split_at:
            lin_after += block_lin
            attn_after += block_attn
    patch = 2.0 * vision_patch_weights(v) * s
    merger = 2.0 * vision_merger_weights(v) * s / (v.merge * v.merge)
    return {"patch": patch, "blocks_linear": lin, "blocks_attention": attn, "merger": merger,
            "total": patch + lin + attn + merger, "grad_linear": lin_after + merger, "grad_attention": attn_after}


# ------------------------------------------------------------------------------------------------ LLM
def llm_flops(tokens: int, t: TextShape, *, logits_rows: int, lora_r: int = 0) -> dict[str, float]:
    """Forward FLOPs of the LLM for one sample of ``tokens`` tokens."""
    linear = 2.0 * llm_layer_weights(t) * tokens
    attention = t.layers * 2.0 * tokens * tokens * t.heads * t.head_dim
    head = 2.0 * t.hidden * t.vocab * logits_rows
    lora = 2.0 * lora_weights(t, lora_r) * tokens if lora_r else 0.0
    return {"linear": linear, "attention": attention, "lm_head": head, "lora": lora,
            "total": linear + attention + head + lora}


# ------------------------------------------------------------------------------------------------ totals
def prefill_flops(*, tokens: int, grids: list[tuple[int, int]], text: TextShape, vision: VisionShape,
                  prompts: int = 0, lora_r: int = 0, logits_rows: int = 1) -> dict[str, float]:
    """One sample's prefill: its images through the vision tower + its tokens through the LLM."""
    vis = sum(vision_flops(h, w, vision, prompts=prompts)["total"] for h, w in grids)
    llm = llm_flops(tokens, text, logits_rows=logits_rows, lora_r=lora_r)["total"]
    return {"vision": vis, "llm": llm, "total": vis + llm}


def stage1_train_flops(*, tokens: int, grids: list[tuple[int, int]], text: TextShape, vision: VisionShape,
                       prompts: int, prompt_blocks: list[int], lora_r: int,
                       supervised: int | None = None) -> dict[str, float]:
    """One sample's stage-1 training step in model FLOPs (module docstring), recompute excluded.

    ``supervised``: LM-head rows (MEDIC-AD computes logits at the supervised positions only); None
    counts a row per token."""
    first = min(prompt_blocks) if prompt_blocks else vision.depth
    fwd_v = bwd_v = 0.0
    for h, w in grids:
        f = vision_flops(h, w, vision, prompts=prompts, split_at=first)
        fwd_v += f["total"]
        bwd_v += f["grad_linear"] + 2.0 * f["grad_attention"]
    llm = llm_flops(tokens, text, logits_rows=tokens if supervised is None else supervised, lora_r=lora_r)
    fwd_l = llm["total"]
    bwd_l = llm["linear"] + llm["lm_head"] + 2.0 * llm["attention"] + 2.0 * llm["lora"]
    return {"forward": fwd_v + fwd_l, "backward": bwd_v + bwd_l, "total": fwd_v + fwd_l + bwd_v + bwd_l,
            "vision": fwd_v + bwd_v, "llm": fwd_l + bwd_l}


def detection_tokens(image_size: int, *, prompt_tokens: int, ano_tokens: int = 16, v: VisionShape | None = None) -> int:
    """Tokens of a one-image detection prompt: image tokens + ``<Ano>`` + the chat text around them."""
    v = v or QWEN2_5_VL_7B_VISION
    side = image_size // (v.patch * v.merge)
    return side * side + ano_tokens + prompt_tokens


# ------------------------------------------------------------------------------------------------ MEDIC-AD modules
def _qformer_flops(queries: int, memory: int, *, memory_dim: int, dim: int, layers: int, out_dim: int) -> float:
    """Q-Former (memory projection, per layer self-attn + cross-attn + 4× MLP on the queries) + 2-layer MLP out."""
    f = 2.0 * memory * memory_dim * dim  # memory_proj
    per_layer = (2.0 * queries * 4 * dim * dim + 4.0 * queries * queries * dim  # self-attention
                 + 2.0 * queries * 2 * dim * dim + 2.0 * memory * 2 * dim * dim + 4.0 * queries * memory * dim  # cross
                 + 2.0 * queries * 8 * dim * dim)  # MLP, ratio 4
    return f + layers * per_layer + 2.0 * queries * (dim * out_dim + out_dim * out_dim)


def anomaly_processor_flops(grid_h: int, grid_w: int, *, vision_dim: int, llm_dim: int, merge: int = 2,
                            num_layers: int = 4, anomaly_dim: int = 256, qformer_dim: int = 256,
                            qformer_layers: int = 2, pool: int = 4) -> float:
    """One image: per tapped layer a projection and a score key over every patch, the Q-Former over f_p."""
    s = grid_h * grid_w
    maps = 2.0 * num_layers * s * (vision_dim * anomaly_dim + anomaly_dim * anomaly_dim)
    q = pool * pool
    return maps + 2.0 * q * anomaly_dim * qformer_dim + _qformer_flops(
        q, s // (merge * merge), memory_dim=llm_dim, dim=qformer_dim, layers=qformer_layers, out_dim=llm_dim)


def diff_processor_flops(grid_h: int, grid_w: int, *, llm_dim: int, merge: int = 2, anomaly_dim: int = 256,
                         qformer_dim: int = 256, qformer_layers: int = 2, pool: int = 4) -> float:
    """One pair (both studies of grid_h × grid_w patches)."""
    q = pool * pool
    return 2.0 * q * 3 * anomaly_dim * qformer_dim + _qformer_flops(
        q, 2 * grid_h * grid_w // (merge * merge), memory_dim=llm_dim, dim=qformer_dim, layers=qformer_layers,
        out_dim=llm_dim)


def medic_overhead(*, text: TextShape, vision: VisionShape, backbone_tokens: int, grids: list[tuple[int, int]],
                   modules: dict, lora: bool) -> dict[str, float]:
    """Analytic matmul FLOPs of one sample through the bare backbone and through MEDIC-AD (decision prefill).

    ``modules``: MedicADConfig fields (``anomaly_dim``, ``qformer_dim``, ``qformer_layers``, ``pool_size``,
    ``diff_pool_size``, ``num_soft_prompts``, ``lora_r``). A pair gets ``<Diff>`` tokens.
    """
    pool, dpool = modules.get("pool_size", 4), modules.get("diff_pool_size", 4)
    kw = dict(anomaly_dim=modules.get("anomaly_dim", 256), qformer_dim=modules.get("qformer_dim", 256),
              qformer_layers=modules.get("qformer_layers", 2))
    extra_tokens = len(grids) * pool * pool + (dpool * dpool if len(grids) == 2 else 0)
    base = prefill_flops(tokens=backbone_tokens, grids=grids, text=text, vision=vision)
    medic = prefill_flops(tokens=backbone_tokens + extra_tokens, grids=grids, text=text, vision=vision,
                          prompts=modules.get("num_soft_prompts", 10), lora_r=modules.get("lora_r", 16) if lora else 0)
    ano = sum(anomaly_processor_flops(h, w, vision_dim=vision.hidden, llm_dim=text.hidden, merge=vision.merge,
                                      num_layers=len(vision.fullatt), pool=pool, **kw) for h, w in grids)
    diff = diff_processor_flops(*grids[0], llm_dim=text.hidden, merge=vision.merge, pool=dpool, **kw) \
        if len(grids) == 2 else 0.0
    total = medic["total"] + ano + diff
    extra_llm = llm_flops(backbone_tokens + extra_tokens, text, logits_rows=1)["total"] - \
        llm_flops(backbone_tokens, text, logits_rows=1)["total"]
    return {"backbone": base["total"], "medic": total, "added_pct": 100 * (total / base["total"] - 1),
            "extra_tokens": extra_tokens, "extra_tokens_pct": 100 * extra_llm / base["total"],
            "anomaly_processor_pct": 100 * ano / base["total"], "diff_processor_pct": 100 * diff / base["total"],
            "lora_pct": 100 * llm_flops(backbone_tokens + extra_tokens, text, logits_rows=0,
                                        lora_r=modules.get("lora_r", 16))["lora"] / base["total"] if lora else 0.0}
