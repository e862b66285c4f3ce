"""A Hugging Face causal LM as the project runs it: the precision policy, loading, LoRA,
train modes, and the per-token logprobs the learner trains on.

:func:`precision` is the one place that turns ``model.dtype`` into dtypes: the rollout
engines, the learner's trained and frozen weights and its autocast all ask it.
:class:`PolicyModel` is the learner's model (the policy, optionally with LoRA adapters, and
the frozen KL reference) as a plain ``torch.nn.Module``; the RLlib module wraps it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

ADAPTER_DIR = "adapter"  # in a LoRA run's checkpoints: the peft adapter, for resume
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -- precision -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    """How a model's weights are stored and what its forward pass computes in."""

    weights: torch.dtype
    compute: torch.dtype
    device_type: str  # "cpu" | "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Where weights and compute differ: ``torch.autocast`` to the compute dtype."""
        if self.compute == self.weights:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.compute)


def precision(dtype: str, device: str | torch.device, *, trained: bool = False) -> Precision:
    """``model.dtype`` on ``device``: ``auto`` is bf16 on a GPU and fp32 on CPU.

    Weights that are not trained (rollout engines, a LoRA base, the KL reference) are stored
    in that dtype. Trained weights on a GPU stay fp32 (AdamW on bf16 weights loses small
    updates) and the forward runs under autocast; on CPU there is no autocast and
    ``bfloat16`` is honoured literally for memory's sake.
    """
    device_type = torch.device(device).type
    if dtype == "auto":
        compute = torch.bfloat16 if device_type == "cuda" else torch.float32
    elif dtype in DTYPES:
        compute = DTYPES[dtype]
    else:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    weights = torch.float32 if trained and device_type == "cuda" else compute
    return Precision(weights, compute, device_type)


def learner_device() -> str:
    """The device a learner in this process trains on: the GPU when it sees one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- loading, LoRA -----------------------------------------------------------------------------
def load_lm(
    path: str, dtype: str, attn_implementation: str = "sdpa", trained: bool = True
) -> torch.nn.Module:
    """An HF causal LM for the learner, its weights in :func:`precision`'s dtype."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" / "Writing model shards" bars
    weights = precision(dtype, learner_device(), trained=trained).weights
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=weights, attn_implementation=attn_implementation
        )
    except ImportError as exc:  # e.g. flash_attention_2 without the flash-attn package
        raise ValueError(
            f"model.attn_implementation={attn_implementation!r} cannot be used here ({exc}); "
            "use sdpa"
        ) from exc


def with_lora(
    lm: torch.nn.Module, lora: dict[str, Any], adapter_path: str | None
) -> torch.nn.Module:
    """``lm`` with trainable LoRA adapters (a peft model; the base weights are frozen).

    ``adapter_path``: continue training a saved adapter (a checkpoint's ``adapter/``).
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_path:
        return PeftModel.from_pretrained(lm, adapter_path, is_trainable=True)
    config = LoraConfig(
        r=int(lora["rank"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"]),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(lm, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ValueError(
            f"model.lora.target_modules={list(lora['target_modules'])}: {exc} "
            "(name linear layers of this model, e.g. q_proj, k_proj, v_proj, o_proj)"
        ) from exc


def is_peft_model(lm: torch.nn.Module) -> bool:
    return hasattr(lm, "peft_config") and hasattr(lm, "get_base_model")


@torch.no_grad()
def merged_state_dict(lm: Any, adapted_only: bool = False) -> dict[str, torch.Tensor]:
    """A peft LoRA model's weights as the plain HF model's state dict, adapters merged in
    (``W + scale * B @ A`` in ``W``'s dtype), computed without modifying the model.

    ``adapted_only``: just the weights the adapters change (what a weight sync must send).
    Weights tied to an adapted one (``lm_head`` = ``embed_tokens``) get the merged value.
    """
    from peft.tuners.lora import LoraLayer

    base = lm.get_base_model()
    deltas = {
        f"{name}.weight": sum(module.get_delta_weight(a) for a in module.active_adapters)
        for name, module in base.named_modules()
        if isinstance(module, LoraLayer)
    }
    state = {
        k.replace(".base_layer.", "."): v
        for k, v in base.state_dict().items()
        if ".lora_" not in k  # lora_A / lora_B / lora_embedding_* / lora_magnitude_vector
    }
    merged = {k: (state[k] + d).to(state[k].dtype) for k, d in deltas.items()}
    by_storage = {state[k].data_ptr(): v for k, v in merged.items()}
    out = {}
    for k, v in state.items():
        if k in merged or v.data_ptr() in by_storage:
            out[k] = merged.get(k, by_storage.get(v.data_ptr()))
        elif not adapted_only:
            out[k] = v
    return out


# -- train modes -------------------------------------------------------------------------------
def set_train_modes(lm: torch.nn.Module) -> None:
    """Dropout off, activation checkpointing on where enabled, LoRA dropout as configured.

    The learner's logprobs are compared with the engine's, which samples without dropout,
    so the model runs in eval mode. transformers checkpoints a decoder layer only while that
    layer is in training mode: those layers alone are marked training (their children,
    where dropout lives, stay in eval). LoRA's own dropout (``model.lora.dropout``) is what
    the user asked for: it runs in training mode.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    lm.eval()
    for name, module in lm.named_modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            module.training = True
        elif name.rsplit(".", 2)[-2:-1] == ["lora_dropout"]:
            module.train()


def enable_activation_checkpointing(lm: Any) -> None:
    """Recompute each decoder layer's activations in the backward pass."""
    # Non-reentrant: gradients reach the adapters even when the layer inputs (frozen
    # embeddings under LoRA) do not require grad. transformers >= 5.2x renamed the method.
    enable = (
        getattr(lm, "activation_checkpointing_enable", None) or lm.gradient_checkpointing_enable
    )
    enable({"use_reentrant": False})


# -- logprobs ----------------------------------------------------------------------------------
def token_logprobs(
    lm: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    temperature: float,
    with_entropy: bool | str,
    share_prompts: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B, R]`` logprobs (and entropies) of the response tokens of a train batch, under the
    sampling temperature (logits divided by it, as the engine sampled). ``with_entropy``:
    True (detached entropy, a metric) or ``"grad"`` (with grad, for an entropy bonus).
    ``share_prompts``: rows with the same prompt compute it once (:func:`response_logits`)."""
    ids = batch["input_ids"]
    r = batch["response_mask"].shape[1]
    logits = response_logits(lm, batch, share_prompts).float() / temperature
    # log p(token) = logit - logsumexp: unlike log_softmax, no second [B, T, vocab]
    # tensor is kept for the backward pass (it dominates memory with a 150k vocabulary).
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, ids[:, -r:].unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy == "grad":  # an entropy bonus in the loss: H with its gradient
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    elif with_entropy:
        with torch.no_grad():  # H = logsumexp - sum(p * logit)
            p_logit = torch.softmax(logits, dim=-1).mul_(logits)
            entropy = lse - p_logit.sum(-1)
            del p_logit
    return logp, entropy


def response_logits(
    lm: torch.nn.Module, batch: dict[str, torch.Tensor], share_prompts: bool = False
) -> torch.Tensor:
    """``[B, R, vocab]``: at each response position, the logits that predicted its token.

    A batch row is a prompt left-padded to P columns and its response (``make_train_batch``).
    ``share_prompts``: a GRPO group's completions share their prompt, so each distinct prompt
    is run once and its rows' responses attend to its keys and values (the KV cache, indexed
    per row; the gradient flows back through it). The logits are those of the full forward
    (tests/train/test_shared_prompts.py), for ~(B - distinct) x P fewer positions: half the
    learner's work on the demo, whose prompts are longer than its answers. A model whose
    cache cannot be reindexed per row, or a batch without a repeated prompt, takes the full
    forward. Not with activation checkpointing, which turns the cache off.
    """
    ids, attn = batch["input_ids"], batch["attention_mask"]
    r = batch["response_mask"].shape[1]
    p = ids.shape[1] - r
    pos = left_padded_positions(attn)
    if share_prompts and p > 0 and r > 1:
        shared = _shared_prompt_logits(lm, ids, attn, pos, p)
        if shared is not None:
            return shared
    logits = lm(
        input_ids=ids,
        attention_mask=attn,
        position_ids=pos,
        logits_to_keep=r + 1,
        use_cache=False,  # no KV cache to build in a training forward
    ).logits
    return logits[:, :-1]  # position t predicts token t+1


def _shared_prompt_logits(
    lm: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, p: int
) -> torch.Tensor | None:
    """:func:`response_logits` with each distinct prompt forwarded once; None where that
    does not apply (no prompt repeats, or a cache this model cannot reindex per row)."""
    prompts, row_prompt = torch.unique(
        torch.cat([ids[:, :p], attn[:, :p]], dim=1), dim=0, return_inverse=True
    )
    if len(prompts) == len(ids):
        return None
    # any row of each prompt stands for it (their prompt columns are identical)
    first = torch.empty(len(prompts), dtype=torch.long, device=ids.device)
    first.scatter_(0, row_prompt, torch.arange(len(ids), device=ids.device))
    cache_kw = cache_kwarg(lm)
    p_ids, p_attn, p_pos = ids[first, :p], attn[first, :p], pos[first, :p]
    # A preamble every distinct prompt starts with (a template's system prompt) is forwarded
    # once too: each prompt's columns are reordered to [preamble, padding, rest], which
    # changes no logit (a key is found by its mask and carries its own position).
    preamble, order = _common_preamble(p_ids, p_attn)
    cache = None
    if preamble:
        p_ids, p_attn, p_pos = (t.gather(1, order) for t in (p_ids, p_attn, p_pos))
        once = lm(
            input_ids=p_ids[:1, :preamble],
            attention_mask=p_attn[:1, :preamble],
            position_ids=p_pos[:1, :preamble],
            logits_to_keep=1,
            use_cache=True,
        )
        cache = getattr(once, cache_kw, None)
        if (
            cache is None
            or not hasattr(cache, "batch_repeat_interleave")
            or cache.get_seq_length() != preamble
        ):
            return None
        cache.batch_repeat_interleave(len(prompts))  # (with grad: it sums back into one row)
    head = lm(
        input_ids=p_ids[:, preamble:],
        attention_mask=p_attn,
        position_ids=p_pos[:, preamble:],
        logits_to_keep=1,  # the last prompt position predicts the first response token
        use_cache=True,
        **({} if cache is None else {cache_kw: cache}),
    )
    cache = getattr(head, cache_kw, None)
    if cache is None or not hasattr(cache, "batch_select_indices") or cache.get_seq_length() != p:
        return None
    cache.batch_select_indices(row_prompt)  # each row's prompt keys and values (with grad)
    # The last response token predicts nothing that is trained on: it is not fed.
    rest = lm(
        input_ids=ids[:, p:-1],
        attention_mask=torch.cat([p_attn[row_prompt], attn[:, p:-1]], dim=1),
        position_ids=pos[:, p:-1],
        use_cache=True,
        **{cache_kw: cache},
    ).logits
    return torch.cat([head.logits[row_prompt], rest], dim=1)


def _common_preamble(ids: torch.Tensor, attn: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The length of the token run every left-padded prompt starts with, where forwarding it
    once pays (:func:`shared_prefix_length`), and each row's column order that puts it
    first: ``[preamble, padding, rest]``. ``(0, ...)`` where it would not pay."""
    n, p = ids.shape
    lengths = attn.sum(1)
    prompts = [row[p - m :].tolist() for row, m in zip(ids, lengths.tolist(), strict=True)]
    k = shared_prefix_length(prompts)
    if not k:
        return 0, torch.empty(0, dtype=torch.long)
    cols = torch.arange(p, device=ids.device)[None, :].expand(n, p)
    pads = (p - lengths)[:, None]
    # new column c holds: c < k -> the preamble (pads + c); c < k + pads -> padding (c - k);
    # else the rest (c, unmoved)
    order = torch.where(cols < k, pads + cols, torch.where(cols < k + pads, cols - k, cols))
    return k, order


# A prefix every prompt shares is computed once (engine prefill, learner forward) where that
# spares at least this many prompt positions: below, the extra forward costs more than it saves.
MIN_SHARED_PREFIX = 32


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt has in common, short of each one's last token
    (its logits are needed: the engine feeds it to start decoding, the learner's first
    response token is predicted from it); 0 where computing them once would not pay."""
    if len(prompts) < 2:
        return 0
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n if n * (len(prompts) - 1) >= MIN_SHARED_PREFIX else 0


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: real tokens count from 0, as generate counts them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def cache_kwarg(lm: torch.nn.Module) -> str:
    """The forward's KV-cache argument: ``cache`` in recent transformers, else
    ``past_key_values`` (its old name)."""
    import inspect

    base = lm.get_base_model() if is_peft_model(lm) else lm
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# -- the learner's model -----------------------------------------------------------------------
class PolicyModel(torch.nn.Module):
    """The trained policy (optionally with LoRA adapters) and its frozen KL reference.

    ``ref_path``: a reference model for the KL penalty (a copy of the initial model), or
    None; under LoRA the reference is the same model with its adapters disabled.
    ``lora``: a :class:`rlvr.config.LoraSpec` as a dict; ``lora_adapter_path``: an adapter to
    continue training. ``temperature``: the rollout's (0 = greedy -> 1).
    ``share_prompt_forward``: each distinct prompt of a micro-batch is forwarded once
    (:func:`response_logits`).
    """

    def __init__(
        self,
        path: str,
        *,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        temperature: float = 1.0,
        ref_path: str | None = None,
        gradient_checkpointing: bool = False,
        lora: dict[str, Any] | None = None,
        lora_adapter_path: str | None = None,
        entropy_grad: bool = False,
        share_prompt_forward: bool = True,
    ) -> None:
        super().__init__()
        self.lm = load_lm(path, dtype, attn_implementation, trained=not lora)
        if gradient_checkpointing:
            enable_activation_checkpointing(self.lm)
        if lora:
            self.lm = with_lora(self.lm, lora, lora_adapter_path)
        self.ref_lm = None
        if ref_path and not lora:
            self.ref_lm = load_lm(ref_path, dtype, attn_implementation, trained=False)
            self.ref_lm.requires_grad_(False)
            self.ref_lm.eval()
        self.kl_to_base = bool(lora) and bool(ref_path)
        self.temperature = float(temperature or 1.0)
        self.with_entropy: bool | str = "grad" if entropy_grad else True  # entropy_coef > 0
        # each distinct prompt of a micro-batch forwarded once (response_logits); activation
        # checkpointing turns the KV cache off
        self.share_prompts = share_prompt_forward and not gradient_checkpointing

    def train(self, mode: bool = True) -> PolicyModel:
        """As ``nn.Module.train``, but the KL reference stays in eval mode (no dropout in
        the reference logprobs, whatever mode the learner sets on the whole module)."""
        super().train(mode)
        if self.ref_lm is not None:
            self.ref_lm.eval()
        return self

    def forward_train(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``logprobs`` (with grad) and ``entropy`` of the response tokens; with a KL
        reference also its ``ref_logprobs``."""
        set_train_modes(self.lm)  # every call: whatever set the modes last (RLlib, a user)
        share = self.share_prompts
        logp, entropy = token_logprobs(self.lm, batch, self.temperature, self.with_entropy, share)
        out = {"logprobs": logp, "entropy": entropy}
        if self.ref_lm is not None:
            with torch.no_grad():
                out["ref_logprobs"], _ = token_logprobs(
                    self.ref_lm, batch, self.temperature, with_entropy=False, share_prompts=share
                )
        elif self.kl_to_base:
            with torch.no_grad(), self.lm.disable_adapter():
                out["ref_logprobs"], _ = token_logprobs(
                    self.lm, batch, self.temperature, with_entropy=False, share_prompts=share
                )
        return out

    def hf_state_dict(self, adapted_only: bool = False) -> dict[str, torch.Tensor]:
        """The policy's weights with HF names; under LoRA merged (``adapted_only``: only the
        adapted layers, what a weight sync must send)."""
        if is_peft_model(self.lm):
            return merged_state_dict(self.lm, adapted_only)
        return self.lm.state_dict()

    def save_pretrained(self, path: str) -> None:
        """The policy as an HF model directory; under LoRA the merged weights (what engines
        and users load as is) plus the adapter in ``adapter/`` (what resume trains on)."""
        if is_peft_model(self.lm):
            # save_pretrained drops tied keys from the dict it is given: pass a copy.
            base = self.lm.get_base_model()
            base.save_pretrained(path, state_dict=dict(merged_state_dict(self.lm)))
            self.lm.save_pretrained(os.path.join(path, ADAPTER_DIR))
        else:
            self.lm.save_pretrained(path)
