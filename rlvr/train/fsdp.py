"""Sharded learners (``algorithm.sharding: fsdp``): PyTorch FSDP2 over the learner group.

With DDP every learner holds the fp32 weights, gradients and AdamW moments in full (~16 bytes
per trained parameter). Under FSDP2 (``torch.distributed.fsdp.fully_shard``) each of N
learners holds 1/N of every parameter (its rows) and of their gradients and optimizer state;
a decoder layer's weights are all-gathered just before its forward and backward and freed
after, gradients are reduce-scattered. What this module does:

- :func:`shard_policy`: ``fully_shard`` each decoder layer, then the model as root (the LoRA
  base under peft; the frozen KL reference too), on a device mesh over the process group
  RLlib already formed (gloo on CPU, NCCL on GPU), with :func:`mixed_precision`.
- :func:`gathered_weights`: the weights out of a sharded model one tensor at a time (every
  rank takes part in each all-gather; rank 0 keeps the full tensor, on CPU), LoRA adapters
  merged per layer: what the weight sync and the consolidated HF checkpoint consume, so no
  rank builds a full copy on its accelerator.
- :func:`save_sharded` / :func:`load_sharded`: model + optimizer shards through
  ``torch.distributed.checkpoint`` (one file per rank) for exact resume.
- :func:`pad_rows`: filler rows that give every learner the same number of rows, hence the
  same number of forward/backward passes (each is a collective under FSDP).

Every function that gathers or checkpoints is collective: every learner must call it, in
the same order. docs/training.md, "Sharded learners (FSDP)".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.config import SHARDINGS, sharding_problem
from rlvr.models.causal_lm import ADAPTER_DIR, is_peft_model, precision

SHARDED_DIR = "sharded"  # in a checkpoint: torch distributed checkpoint of model + optimizer


def check_sharding(config: Any) -> None:
    """A :class:`~rlvr.train.learner.LearnerConfig` the learner group can run; else a
    ValueError naming ``algorithm.sharding``."""
    problem = sharding_problem(config.sharding, config.num_learners, config.micro_batch_tokens)
    if problem:
        raise ValueError(problem)


def _rank0() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


# -- wrapping ------------------------------------------------------------------------------
def mixed_precision(dtype: str, device: str | torch.device) -> Any:
    """FSDP2's ``MixedPrecisionPolicy`` for ``model.dtype`` on ``device``.

    On a GPU the sharded master weights stay fp32 (what AdamW steps) while forward and
    backward run on bf16 (or fp16) copies gathered per layer; gradients are reduced in fp32.
    On CPU :func:`~rlvr.models.causal_lm.precision` computes in the weights' dtype: no cast.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    p = precision(dtype, device, trained=True)
    if p.compute == p.weights:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=p.compute, reduce_dtype=torch.float32)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of an HF model (its ``_no_split_modules`` classes): the units
    FSDP gathers one at a time."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names and m is not model]
    if not layers:
        raise ValueError(
            f"algorithm.sharding=fsdp: no decoder layers found in {type(model).__name__} "
            f"(looked for {sorted(names) or 'its _no_split_modules'})"
        )
    return layers


def shard_model(lm: torch.nn.Module, mesh: Any, mp_policy: Any) -> None:
    """``fully_shard`` each decoder layer and then the root: the HF model itself, or under
    LoRA the peft model's base (the LoRA layers live inside the decoder layers)."""
    from torch.distributed.fsdp import fully_shard

    base = lm.get_base_model() if is_peft_model(lm) else lm
    if is_peft_model(lm):
        _check_lora_layers(base)
    for layer in decoder_layers(base):
        fully_shard(layer, mesh=mesh, mp_policy=mp_policy)
    fully_shard(base, mesh=mesh, mp_policy=mp_policy)


def shard_policy(policy: Any, dtype: str, device: str | torch.device) -> None:
    """Shard a :class:`~rlvr.models.causal_lm.PolicyModel` in place over the default process
    group (the one RLlib's learner group formed). Parameters become ``DTensor`` s: build the
    optimizer after this."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not dist.is_initialized():
        raise RuntimeError(
            "algorithm.sharding=fsdp needs the learners' process group "
            "(algorithm.num_learners >= 2)"
        )
    device = torch.device(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    if is_peft_model(policy.lm):
        # LoRA's A matrices start random: every rank shards rank 0's (DDP broadcasts them).
        with torch.no_grad():
            for p in policy.lm.parameters():
                if p.requires_grad:
                    dist.broadcast(p.data, src=0)
    shard_model(policy.lm, mesh, mixed_precision(dtype, device))
    if policy.ref_lm is not None:  # frozen, already in the compute dtype
        shard_model(policy.ref_lm, mesh, MixedPrecisionPolicy())


def _check_lora_layers(base: torch.nn.Module) -> None:
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not isinstance(module, LoraLinear):
            raise ValueError(
                f"model.lora.target_modules: {name} is a {type(module).__name__}; under "
                "algorithm.sharding=fsdp only linear layers can be adapted"
            )


# -- bytes held --------------------------------------------------------------------------------
def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of parameters and optimizer state this process holds (its shards under FSDP;
    tied parameters once): what sharding divides."""
    params = sum(_local(p).numel() * p.element_size() for p in module.parameters())
    optim = sum(
        _local(v).numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    return {"params": int(params), "optimizer": int(optim)}


# -- weights out -------------------------------------------------------------------------------
def _full_tensors(
    state: dict[str, torch.Tensor], aliases: dict[str, str], keep: bool
) -> Iterator[tuple[str, torch.Tensor | None]]:
    """``state``'s tensors in full, one all-gather each; ``keep``: this rank keeps them (on
    CPU), else it yields None. A tied name repeats its first name's tensor, gathered once."""
    from torch.distributed.tensor import DTensor

    kept: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name in aliases:
            yield name, kept.get(aliases[name]) if keep else None
            continue
        full = t.full_tensor() if isinstance(t, DTensor) else t
        if not keep:
            del full
            yield name, None
            continue
        full = full.detach().to("cpu", copy=True)
        if name in aliases.values():
            kept[name] = full
        yield name, full


def _aliases(model: torch.nn.Module) -> dict[str, str]:
    """Tied parameter names -> the first name of the same parameter (the same on every rank)."""
    first: dict[int, str] = {}
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def gathered_weights(
    lm: torch.nn.Module, adapted_only: bool = False, keep: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    """The HF-named weights of a (sharded) model, gathered one tensor at a time; CPU tensors.

    Collective: every rank iterates it to the end (:func:`drain` on the others); ranks with
    ``keep=False`` yield nothing and hold one gathered tensor at a time. Under LoRA each
    adapted layer comes out merged (``W + scale * B @ A``, as
    :func:`~rlvr.models.causal_lm.merged_state_dict`); ``adapted_only``: only those layers.
    Plain tensors (an unsharded model) pass through, so the result is comparable.
    """
    if not is_peft_model(lm):
        for name, t in _full_tensors(lm.state_dict(), _aliases(lm), keep):
            if t is not None:
                yield name, t
        return
    yield from _merged(lm, adapted_only, keep)


def _merged(lm: Any, adapted_only: bool, keep: bool) -> Iterator[tuple[str, torch.Tensor]]:
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import transpose

    base = lm.get_base_model()
    lora = {n: m for n, m in base.named_modules() if isinstance(m, LoraLayer)}
    state = base.state_dict()

    def owner(key: str) -> str | None:
        head = key.split(".base_layer.")[0] if ".base_layer." in key else key.split(".lora_")[0]
        return head if head in lora else None

    if adapted_only:  # the weights the adapters change (biases do not)
        state = {
            k: v
            for k, v in state.items()
            if owner(k) is not None and not k.endswith(".base_layer.bias")
        }
    # Every key of an adapted layer, to know when its last one has been gathered.
    remaining = {name: 0 for name in lora}
    for k in state:
        if (o := owner(k)) is not None:
            remaining[o] += 1
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in lora}
    for key, t in _full_tensors(state, _aliases(base), keep):
        o = owner(key)
        if o is None:
            if t is not None:
                yield key, t
            continue
        remaining[o] -= 1
        if t is not None:
            parts[o][key[len(o) + 1 :]] = t
        if remaining[o] or not keep:
            continue
        layer, got = lora[o], parts.pop(o)
        weight = got.pop("base_layer.weight")
        delta = sum(
            transpose(
                got[f"lora_B.{a}.weight"].float() @ got[f"lora_A.{a}.weight"].float(),
                layer.fan_in_fan_out,
            )
            * layer.scaling[a]
            for a in layer.active_adapters
        )
        yield f"{o}.weight", (weight.float() + delta).to(weight.dtype)
        if "base_layer.bias" in got:
            yield f"{o}.bias", got["base_layer.bias"]


def drain(items: Iterator[Any]) -> None:
    """Run a collective iterator to its end (ranks that keep nothing)."""
    for _ in items:
        pass


def gather_full(lm: torch.nn.Module, adapted_only: bool = False) -> dict[str, torch.Tensor]:
    """:func:`gathered_weights` as a dict on rank 0 ({} elsewhere). Collective."""
    rank0 = _rank0()
    items = gathered_weights(lm, adapted_only, keep=rank0)
    if rank0:
        return dict(items)
    drain(items)
    return {}


def adapter_state(lm: Any) -> dict[str, torch.Tensor]:
    """A peft model's LoRA tensors in full under the peft model's own names (what
    ``PeftModel.save_pretrained(state_dict=...)`` takes); rank 0 only. Collective."""
    state = {k: v for k, v in lm.state_dict().items() if ".lora_" in k}
    return {k: t for k, t in _full_tensors(state, {}, _rank0()) if t is not None}


# -- sharded checkpoints -------------------------------------------------------------------------
def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Frozen weights (the KL reference, a LoRA base) are rebuilt from the model directory.
    return StateDictOptions(ignore_frozen_params=True, **kw)


def save_sharded(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str | Path
) -> None:
    """Each rank writes its shards of the trained weights and the optimizer state into
    ``path`` (a torch distributed checkpoint directory; shared storage across nodes).
    Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer, options=_options())
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))


def load_sharded(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str | Path
) -> None:
    """Restore :func:`save_sharded`'s weights and optimizer state, each rank its own shards
    (resharded if the number of learners changed). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer, options=_options())
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        module,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=_options(),
    )


def save_checkpoint(
    policy: Any, module: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str | Path
) -> None:
    """A sharded learner's checkpoint: the gathered policy as an HF model directory (rank 0;
    under LoRA merged, plus the adapter in ``adapter/``), for engines and export, and every
    rank's shards in ``sharded/``, for exact resume. Collective."""
    lm = policy.lm
    full = gather_full(lm)
    adapter = adapter_state(lm) if is_peft_model(lm) else None
    save_sharded(module, optimizer, Path(path) / SHARDED_DIR)
    if not _rank0():
        return
    if adapter is None:
        lm.save_pretrained(str(path), state_dict=full)
    else:
        lm.get_base_model().save_pretrained(str(path), state_dict=full)
        lm.save_pretrained(str(Path(path) / ADAPTER_DIR), state_dict=adapter)


def load_checkpoint(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str | Path
) -> None:
    """Restore a checkpoint's ``sharded/`` state (collective); a checkpoint without one
    was written by unsharded learners: a ValueError."""
    sharded = Path(path) / SHARDED_DIR
    if not sharded.is_dir():
        raise ValueError(
            f"checkpoint {path} has no {SHARDED_DIR}/ (it was written with "
            "algorithm.sharding=none): resume it with algorithm.sharding=none"
        )
    load_sharded(module, optimizer, sharded)


# -- equal shards ------------------------------------------------------------------------------
def pad_rows(batch: dict[str, np.ndarray], parts: int) -> tuple[dict[str, np.ndarray], int]:
    """``batch`` with filler rows appended so that it splits into ``parts`` equal slices;
    returns it and the filler's real (attended) tokens per pass.

    Under FSDP every forward and backward is a collective, so every learner must run the
    same number of micro-batches: equal row counts give equal plans (micro-batches by
    ``micro_batch_size``). A filler row is a copy of the last row's prompt with no response
    (response mask, advantages and rollout logprobs zero): it adds nothing to the loss, its
    gradient or the token statistics, and the loss shares stay those of the real batch.
    """
    n = len(batch["advantages"])
    extra = -n % parts
    if extra == 0:
        return batch, 0
    r = batch["response_mask"].shape[1]
    row = {k: np.asarray(v[-1:]).copy() for k, v in batch.items()}
    row["attention_mask"][:, row["attention_mask"].shape[1] - r :] = 0
    for k in ("response_mask", "advantages", "rollout_logprobs"):
        row[k][...] = 0
    if "input_ids" in row:
        row["input_ids"][:, row["input_ids"].shape[1] - r :] = 0
    out = {k: np.concatenate([np.asarray(v)] + [row[k]] * extra) for k, v in batch.items()}
    return out, int(row["attention_mask"].sum()) * extra


def discount_filler(metrics: dict[str, float], filler_tokens: float) -> None:
    """Take :func:`pad_rows`' filler out of ``learner/tokens`` (real tokens only); its
    compute stays in ``learner/pad_frac``, as padding's does."""
    tokens = metrics["learner/tokens"]
    computed = tokens / max(1.0 - metrics["learner/pad_frac"], 1e-12)
    metrics["learner/tokens"] = tokens - filler_tokens
    metrics["learner/pad_frac"] = 1.0 - metrics["learner/tokens"] / max(computed, 1.0)


__all__ = [
    "SHARDED_DIR",
    "SHARDINGS",
    "adapter_state",
    "check_sharding",
    "decoder_layers",
    "discount_filler",
    "drain",
    "gather_full",
    "gathered_weights",
    "load_checkpoint",
    "load_sharded",
    "mixed_precision",
    "pad_rows",
    "save_checkpoint",
    "save_sharded",
    "shard_model",
    "shard_policy",
    "state_bytes",
]
