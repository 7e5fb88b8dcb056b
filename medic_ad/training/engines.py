"""What differs between the engines the loop runs under (one process, DDP, FSDP2, DeepSpeed ZeRO-2/3).

Each function here takes the prepared ``Accelerator`` and hides one difference: how the DeepSpeed
config's "auto" keys are filled, where full weights come from, how trainable weights and optimizer
state go back in on resume. The loop itself stays one code path.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

# DeepSpeed's bucket and persistence sizes that accelerate derives from ``model.config.hidden_size``
# (which MEDIC-AD, a composed nn.Module, does not have): filled here from the backbone's text config.
_HIDDEN_SIZE_KEYS = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
}


def engine_name(accelerator: Accelerator) -> str:
    """``single``, ``ddp``, ``fsdp``, ``zero2`` or ``zero3``."""
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return f"zero{accelerator.state.deepspeed_plugin.zero_stage}"
    if kind == DistributedType.FSDP:
        return "fsdp"
    return "ddp" if accelerator.num_processes > 1 else "single"


def check_requested(engine: str) -> None:
    """Refuse a launch whose engine accelerate quietly replaced: it enables FSDP only on GPUs, and on CPU
    ranks an FSDP launch config trains plain DDP, with every rank holding the whole model."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and engine != "fsdp":
        raise RuntimeError(f"the launch config asks for FSDP, but accelerate set up {engine} (accelerate runs FSDP "
                           "only on GPUs); use a DDP or DeepSpeed config on CPU ranks")


def text_hidden_size(model: nn.Module) -> int:
    """The LLM's hidden size, read from the first Hugging Face config found among the modules."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "get_text_config"):
            return int(config.get_text_config().hidden_size)
    raise ValueError(f"{type(model).__name__} holds no Hugging Face backbone to read a hidden size from")


def fill_deepspeed_config(config: dict[str, Any], model: nn.Module, *, micro_batch: int, grad_accum: int,
                          world_size: int) -> dict[str, Any]:
    """Replace the "auto" batch and hidden-size entries of a DeepSpeed config, in place.

    The loop hands DeepSpeed no dataloader, so accelerate cannot infer the micro batch; and the bucket sizes
    accelerate would compute from ``model.config.hidden_size`` come from the backbone here instead.
    """
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = grad_accum
    config["train_batch_size"] = micro_batch * grad_accum * world_size
    zero = config.get("zero_optimization", {})
    auto = [k for k in _HIDDEN_SIZE_KEYS if zero.get(k) == "auto"]
    if auto:
        hidden = text_hidden_size(model)
        for key in auto:
            zero[key] = _HIDDEN_SIZE_KEYS[key](hidden)
    return config


def register_outside_reads(accelerator: Accelerator, model: nn.Module) -> None:
    """Under ZeRO-3 a parameter is gathered only inside its own module's forward; the parameters a model
    reads elsewhere (``model.external_parameters()``: (reading module, parameter) pairs) are registered
    with the reading module so DeepSpeed gathers them there too."""
    if engine_name(accelerator) != "zero3" or not hasattr(model, "external_parameters"):
        return
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    for module, param in model.external_parameters():
        register_external_parameter(module, param)


def full_state_dict(accelerator: Accelerator, model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of the prepared ``model``, unsharded. Call it on every rank (ZeRO-3 and FSDP gather
    collectively); under ZeRO-3 and FSDP only the main process gets the tensors, the others an empty dict."""
    state = accelerator.get_state_dict(model)
    return state if accelerator.is_main_process else {}


@contextmanager
def holding(model: nn.Module, state: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """``model`` with the tensors of ``state`` in place of its (possibly partitioned) parameters and
    buffers, restored on exit: the recipes' ordinary ``save_pretrained`` then writes full weights."""
    swapped = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        for slot, table in (("param", module._parameters), ("buffer", module._buffers)):
            for name, value in list(table.items()):
                key = f"{prefix}.{name}" if prefix else name
                if value is None or key not in state:
                    continue
                full = state[key]
                table[name] = nn.Parameter(full, requires_grad=value.requires_grad) if slot == "param" else full
                swapped.append((table, name, value))
    try:
        yield model
    finally:
        for table, name, value in reversed(swapped):
            table[name] = value


def load_trainable(accelerator: Accelerator, model: nn.Module, trainable: dict[str, torch.Tensor]) -> None:
    """Put saved trainable weights back into the prepared ``model`` on every rank."""
    engine = engine_name(accelerator)
    if engine == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, trainable, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    inner = accelerator.unwrap_model(model)
    if engine == "zero3":
        import deepspeed

        params = dict(inner.named_parameters())
        chosen = [params[k] for k in trainable if k in params]
        with deepspeed.zero.GatheredParameters(chosen, modifier_rank=0):  # rank 0's copy is scattered on exit
            if accelerator.is_main_process:
                with torch.no_grad():
                    for key, value in trainable.items():
                        params[key].copy_(value)
        return
    inner.load_state_dict(trainable, strict=False)


def optimizer_sharded(accelerator: Accelerator) -> bool:
    """Whether each rank holds only its share of the optimizer state (ZeRO): then every rank writes its own."""
    return engine_name(accelerator) in ("zero2", "zero3")


def optimizer_state(accelerator: Accelerator, model: nn.Module, optimizer) -> dict[str, Any]:
    """The optimizer state to checkpoint: this rank's share under ZeRO, the full state elsewhere (FSDP
    gathers it keyed by parameter name, so a run resumes on any number of ranks)."""
    if engine_name(accelerator) == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, _inner_optimizer(optimizer),
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state(accelerator: Accelerator, model: nn.Module, optimizer, state: dict[str, Any]) -> None:
    if engine_name(accelerator) == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, _inner_optimizer(optimizer), state,
                                 options=StateDictOptions(full_state_dict=True))
        return
    if optimizer_sharded(accelerator):
        # DeepSpeed reads its own share from a list indexed by rank, and its fp32 master weights from the
        # share (not rounded from the 16-bit model weights), so a resumed run continues exactly
        shares = [state if r == accelerator.process_index else None for r in range(accelerator.num_processes)]
        _inner_optimizer(optimizer).load_state_dict(shares, load_from_fp32_weights=True)
        return
    optimizer.load_state_dict(state)


def _inner_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)
