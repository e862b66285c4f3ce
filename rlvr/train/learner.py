"""The learner: an RLlib (new API stack) ``TorchLearner`` training an HF causal LM with the
GRPO-family loss, in a ``LearnerGroup`` of N data-parallel learners.

Pieces, top to bottom:

- :func:`make_train_batch` turns prompts + sampled completions into padded arrays (prompt
  left-padded, response right-padded, so every response starts at the same column).
- :func:`plan_micro_batches` splits a batch into micro-batches: runs of
  ``micro_batch_size`` sequences, or (``micro_batch_tokens``) sequences sorted by length and
  packed up to a budget of padded tokens. Each micro-batch is trimmed to its own longest
  prompt and response, so short sequences do not pay for the batch's longest.
- :class:`CausalLMModule` is the ``TorchRLModule``: it wraps the HF model (optionally with
  LoRA adapters through ``peft``; with a KL penalty, a frozen reference: a copy of the
  initial model, or under LoRA the same model with its adapters disabled) and returns
  per-token logprobs and entropies of the response tokens under the sampling temperature.
- :class:`PolicyLearner` is the ``TorchLearner``: one ``update`` = (optionally) a no-grad
  pass for the old logprobs, then for each epoch one optimizer step over the whole batch,
  accumulated over micro-batches (DDP ``no_sync`` on all but the last), gradient clipping,
  AdamW. Metrics go to RLlib's ``MetricsLogger`` as sums, reduced across learners.
- :class:`Learner` is what the loop uses: it builds the ``LearnerGroup`` (local when
  ``num_learners == 0``; otherwise N Ray actors joined by torch.distributed/DDP through Ray
  Train's backend), shards each batch across learners through the object store, bounds
  every remote call with a timeout, and exports weights and checkpoints in HF format.

Loss normalisation is exact under micro-batching and sharding: each micro-batch's loss is
scaled by its share of the whole batch (tokens for ``token_mean``, sequences otherwise) and
by the number of learners (DDP averages gradients), so the summed gradient equals that of
the loss over the full batch. ``seq_mean_token_sum_norm`` divides by the generation budget
(``max_new_tokens``) as Dr. GRPO prescribes, not by the padded width.

On a GPU: trainable weights stay fp32 and the forward runs under bf16 autocast; frozen
weights (a LoRA base, the KL reference) are loaded in bf16. Attention uses
``model.attn_implementation`` (``sdpa`` by default). ``model.gradient_checkpointing``
recomputes each decoder layer's activations in the backward pass. Dropout stays off (the
engine samples without it, and the importance ratios compare the two), LoRA dropout aside.

LoRA (``model.lora``): only the adapters are trained and in the optimizer. Weights leave the
learner merged (``W + scale * B @ A``, computed without touching the model): the engines
and checkpoints get a plain HF model; the weight sync sends only the adapted layers (the
rest never changes). A checkpoint also holds the adapter (``adapter/``) so that resume
continues training it on top of the original base model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.rollout.base import Completion
from rlvr.rollout.hf import cpu_threads
from rlvr.train.algorithms import k3_kl, policy_loss

MODULE_ID = "policy"
OPTIMIZER_FILE = "optimizer.pt"
ADAPTER_DIR = "adapter"  # in a LoRA run's checkpoints: the peft adapter, for resume

# Sums logged per update; the driver divides by the matching weights (see _reduce).
_TOKEN_STATS = ("loss", "pg_loss", "kl", "entropy", "clip_frac", "ratio_mean", "tis_weight_mean")


# -- batches ---------------------------------------------------------------------------------
def make_train_batch(
    prompt_token_ids: Sequence[Sequence[int]],
    completions: Sequence[Completion],
    advantages: Sequence[float] | torch.Tensor,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """Padded arrays for the learner, one row per completion.

    Returns ``input_ids`` / ``attention_mask`` ``[B, P + R]`` (prompt left-padded to P,
    response right-padded to R), ``response_mask`` / ``rollout_logprobs`` ``[B, R]`` and
    ``advantages`` ``[B]``.
    """
    if len(completions) != len(advantages):
        raise ValueError(f"{len(completions)} completions but {len(advantages)} advantages")
    if not completions:
        raise ValueError("an empty batch cannot be trained on")
    prompts = [prompt_token_ids[c.prompt_index] for c in completions]
    p_len = max(len(p) for p in prompts)
    r_len = max(max(len(c.token_ids) for c in completions), 1)
    b = len(completions)
    input_ids = np.full((b, p_len + r_len), pad_id, dtype=np.int64)
    attention = np.zeros((b, p_len + r_len), dtype=np.int64)
    response_mask = np.zeros((b, r_len), dtype=np.float32)
    rollout_lp = np.zeros((b, r_len), dtype=np.float32)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        n = len(c.token_ids)
        if len(c.logprobs) != n:
            raise ValueError(f"completion {i} has {n} tokens but {len(c.logprobs)} logprobs")
        input_ids[i, p_len - len(p) : p_len] = p
        input_ids[i, p_len : p_len + n] = c.token_ids
        attention[i, p_len - len(p) : p_len + n] = 1
        response_mask[i, :n] = 1.0
        rollout_lp[i, :n] = c.logprobs
    adv = np.asarray(
        advantages.tolist() if isinstance(advantages, torch.Tensor) else advantages,
        dtype=np.float32,
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "response_mask": response_mask,
        "rollout_logprobs": rollout_lp,
        "advantages": adv,
    }


def _slice_batch(batch: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    return {k: v[start:end] for k, v in batch.items()}


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    q, r = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append((start, end))
        start = end
    return out


def plan_micro_batches(
    prompt_lens: Sequence[int],
    response_lens: Sequence[int],
    *,
    max_seqs: int,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """The rows of each micro-batch.

    Without ``max_tokens``: consecutive runs of ``max_seqs`` rows, in batch order. With it:
    rows sorted longest first (prompt + response, ties in batch order) and packed greedily
    while ``rows x (longest prompt + longest response)`` stays within ``max_tokens``: the
    padded size the forward pass computes once a micro-batch is trimmed to its own longest
    prompt and response. A row longer than the budget gets a micro-batch of its own;
    ``max_seqs`` does not apply.
    """
    n = len(prompt_lens)
    if len(response_lens) != n:
        raise ValueError(f"{n} prompt lengths but {len(response_lens)} response lengths")
    if max_tokens is None:
        if max_seqs < 1:
            raise ValueError(f"max_seqs must be >= 1, got {max_seqs}")
        return [list(range(s, min(s + max_seqs, n))) for s in range(0, n, max_seqs)]
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(n), key=lambda i: -(prompt_lens[i] + max(response_lens[i], 1)))
    plan: list[list[int]] = []
    rows: list[int] = []
    p_max = r_max = 0
    for i in order:
        p, r = max(p_max, prompt_lens[i]), max(r_max, response_lens[i], 1)
        if rows and (len(rows) + 1) * (p + r) > max_tokens:
            plan.append(rows)
            rows, p, r = [], prompt_lens[i], max(response_lens[i], 1)
        rows.append(i)
        p_max, r_max = p, r
    if rows:
        plan.append(rows)
    return plan


def _row_lengths(batch: dict[str, torch.Tensor]) -> tuple[list[int], list[int]]:
    """(prompt tokens, response tokens) of every row of a :func:`make_train_batch` batch."""
    r = batch["response_mask"].shape[1]
    prompt = batch["attention_mask"][:, :-r].sum(-1) if r else batch["attention_mask"].sum(-1)
    response = batch["response_mask"].sum(-1)
    return prompt.long().tolist(), response.long().tolist()


def _micro_batch(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """``rows`` of the batch, trimmed to their own longest prompt and response.

    The columns dropped are padding in every one of these rows (masked out, position ids
    count real tokens only), so logprobs are unchanged; the forward pass gets cheaper.
    """
    first = next(iter(batch.values()))
    index = torch.as_tensor(rows, dtype=torch.long, device=first.device)
    m = {k: v.index_select(0, index) for k, v in batch.items()}
    r_pad = m["response_mask"].shape[1]
    p_pad = m["input_ids"].shape[1] - r_pad
    plens, rlens = _row_lengths(m)
    p, r = max(plens), max(max(rlens), 1)
    for k in ("input_ids", "attention_mask"):
        m[k] = m[k][:, p_pad - p : p_pad + r]
    for k in ("response_mask", "rollout_logprobs"):
        m[k] = m[k][:, :r]
    return m


# -- the RLModule ----------------------------------------------------------------------------
def _use_bf16(device: torch.device, dtype: str) -> bool:
    return device.type == "cuda" and dtype in ("auto", "bfloat16")


def _load_lm(
    path: str, dtype: str, attn_implementation: str = "sdpa", frozen: bool = False
) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" / "Writing model shards" bars

    # Trained weights stay fp32 (AdamW on bf16 weights loses small updates); bf16 comes from
    # autocast in the learner. Frozen weights have no optimizer: bf16 on a GPU halves their
    # memory. "bfloat16" on CPU is honoured literally for memory's sake.
    cuda = torch.cuda.is_available()
    bf16 = (dtype == "bfloat16" and not cuda) or (frozen and cuda and dtype != "float32")
    try:
        return AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch.bfloat16 if bf16 else torch.float32,
            attn_implementation=attn_implementation,
        )
    except ImportError as exc:  # e.g. flash_attention_2 without the flash-attn package
        raise ValueError(
            f"model.attn_implementation={attn_implementation!r} cannot be used here ({exc}); "
            "use sdpa"
        ) from exc


def _with_lora(lm: torch.nn.Module, lora: dict[str, Any], adapter_path: str | None):
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


def _is_peft_model(lm: torch.nn.Module) -> bool:
    return hasattr(lm, "peft_config") and hasattr(lm, "get_base_model")


@torch.no_grad()
def merged_state_dict(lm: torch.nn.Module, adapted_only: bool = False) -> dict[str, torch.Tensor]:
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


def _set_train_modes(lm: torch.nn.Module) -> None:
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


def _enable_activation_checkpointing(lm: torch.nn.Module) -> None:
    # Non-reentrant: gradients reach the adapters even when the layer inputs (frozen
    # embeddings under LoRA) do not require grad. transformers >= 5.2x renamed the method.
    enable = (
        getattr(lm, "activation_checkpointing_enable", None) or lm.gradient_checkpointing_enable
    )
    enable({"use_reentrant": False})


def _import_rllib():
    import logging

    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

    # RLModule.__init__ itself builds a legacy RLModuleConfig and warns that it is
    # deprecated, on every construction (Ray 2.60); nothing in our call is deprecated.
    logging.getLogger("ray._common.deprecation").addFilter(
        lambda record: "RLModule(config=" not in record.getMessage()
    )

    return TorchRLModule


class CausalLMModule(_import_rllib()):
    """An HF causal LM as an RLlib ``TorchRLModule``.

    ``model_config``: ``path`` (HF directory), ``dtype``, ``attn_implementation``,
    ``temperature`` (logits are divided by it, so logprobs match the sampling distribution),
    ``ref_path`` (a frozen reference model for the KL penalty, or None),
    ``gradient_checkpointing``, ``lora`` (a :class:`rlvr.config.LoraSpec` as a dict, or None)
    and ``lora_adapter_path`` (an adapter to continue training).
    """

    def setup(self) -> None:
        cfg = self.model_config
        dtype, attn = cfg.get("dtype", "auto"), cfg.get("attn_implementation", "sdpa")
        lora = cfg.get("lora")
        self.lm = _load_lm(cfg["path"], dtype, attn, frozen=bool(lora))
        if cfg.get("gradient_checkpointing"):
            _enable_activation_checkpointing(self.lm)
        if lora:
            self.lm = _with_lora(self.lm, lora, cfg.get("lora_adapter_path"))
        self.ref_lm = None
        if cfg.get("ref_path") and not lora:  # under LoRA the reference is the bare base
            self.ref_lm = _load_lm(cfg["ref_path"], dtype, attn, frozen=True)
            self.ref_lm.requires_grad_(False)
            self.ref_lm.eval()
        self.kl_to_base = bool(lora) and bool(cfg.get("ref_path"))
        self.temperature = float(cfg.get("temperature") or 1.0)

    def _token_logprobs(
        self, lm: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool
    ):
        ids, attn = batch["input_ids"], batch["attention_mask"]
        r = batch["response_mask"].shape[1]
        # Left padding: positions count real tokens only (as generate does).
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = lm(
            input_ids=ids,
            attention_mask=attn,
            position_ids=pos,
            logits_to_keep=r + 1,
            use_cache=False,  # no KV cache to build in a training forward
        ).logits
        logits = logits[:, :-1].float() / self.temperature  # position t predicts token t+1
        # log p(token) = logit - logsumexp: unlike log_softmax, no second [B, T, vocab]
        # tensor is kept for the backward pass (it dominates memory with a 150k vocabulary).
        lse = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, ids[:, -r:].unsqueeze(-1)).squeeze(-1) - lse
        entropy = None
        if with_entropy:
            with torch.no_grad():  # H = logsumexp - sum(p * logit)
                p_logit = torch.softmax(logits, dim=-1).mul_(logits)
                entropy = lse - p_logit.sum(-1)
                del p_logit
        return logp, entropy

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        _set_train_modes(self.lm)  # every call: whatever set the modes last (RLlib, a user)
        logp, entropy = self._token_logprobs(self.lm, batch, with_entropy=True)
        out = {"logprobs": logp, "entropy": entropy}
        if self.ref_lm is not None:
            with torch.no_grad():
                out["ref_logprobs"], _ = self._token_logprobs(
                    self.ref_lm, batch, with_entropy=False
                )
        elif self.kl_to_base:
            with torch.no_grad(), self.lm.disable_adapter():
                out["ref_logprobs"], _ = self._token_logprobs(self.lm, batch, with_entropy=False)
        return out

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            return self._forward_train(batch)


# -- the Learner -----------------------------------------------------------------------------
def _import_torch_learner():
    from ray.rllib.core.learner.torch.torch_learner import TorchLearner

    return TorchLearner


class PolicyLearner(_import_torch_learner()):
    """GRPO-family updates (see the module docstring). Hyperparameters come from
    ``config.learner_config_dict`` (a :class:`LearnerConfig` as a dict)."""

    def build(self) -> None:
        super().build()
        if self._device.type == "cpu":
            torch.set_num_threads(cpu_threads())

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        hp = self.config.learner_config_dict
        module = self._module[module_id]
        params = [p for p in module.parameters() if p.requires_grad]  # not the reference
        optimizer = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        # lr is set by before_gradient_based_update (linear warmup), not an RLlib schedule.
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params)

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        hp = self.config.learner_config_dict
        self._batch_info = dict(timesteps)
        step = int(timesteps.get("step", 1))
        warm = hp["warmup_steps"]
        lr = hp["lr"] * (min(1.0, step / warm) if warm > 0 else 1.0)
        for opt in self._named_optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        # RLlib's default logs the lr under its own key; we log `lr` in _update instead.
        pass

    def _autocast(self):
        hp = self.config.learner_config_dict
        if _use_bf16(self._device, hp["dtype"]):
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        """The policy loss of one micro-batch (docs/design.md, "Loss semantics").

        Old logprobs are ``batch["old_logprobs"]`` when an earlier pass computed them
        (``epochs_per_step > 1``); otherwise the batch was sampled by exactly these weights
        and the current logprobs, detached, are the old ones.
        """
        hp = self.config.learner_config_dict
        logp = fwd_out["logprobs"].float()
        old_lp = batch.get("old_logprobs")
        old_lp = logp.detach() if old_lp is None else old_lp
        ref = fwd_out.get("ref_logprobs")
        loss, stats = policy_loss(
            logp,
            old_lp,
            batch["advantages"],
            batch["response_mask"],
            clip_low=hp["clip_low"],
            clip_high=hp["clip_high"],
            loss_agg=hp["loss_agg"],
            ref_logprobs=None if ref is None else ref.float(),
            kl_coef=hp["kl_coef"],
            rollout_logprobs=batch["rollout_logprobs"],
            tis_cap=hp["tis_cap"],
        )
        mask = batch["response_mask"]
        n_tok = mask.sum().clamp(min=1)
        stats["loss"] = loss.detach()
        stats["entropy"] = (fwd_out["entropy"] * mask).sum() / n_tok
        if ref is None:
            # No reference model: `kl` is the drift from the batch's policy (0 for a single
            # on-policy epoch, > 0 once epochs_per_step > 1 has moved the weights).
            stats["kl"] = (k3_kl(logp.detach(), old_lp) * mask).sum() / n_tok
        self._last_stats = (stats, old_lp)
        return loss

    def _update(self, batch: dict[str, Any], **kwargs) -> tuple[Any, Any, Any]:
        hp = self.config.learner_config_dict
        info = self._batch_info
        data = batch[MODULE_ID]
        module = self.module[MODULE_ID]
        optimizer = next(iter(self._named_optimizers.values()))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        b = len(data["advantages"])
        prompt_lens, response_lens = _row_lengths(data)
        plan = plan_micro_batches(
            prompt_lens,
            response_lens,
            max_seqs=hp["micro_batch_size"],
            max_tokens=hp.get("micro_batch_tokens"),
        )
        micro = [_micro_batch(data, rows) for rows in plan]
        # Exact normalisation over the whole (all-learner) batch; see the module docstring.
        shards = int(info.get("num_shards", 1))
        total_tokens = float(
            info.get("total_tokens") or sum(float(m["response_mask"].sum()) for m in micro)
        )
        total_seqs = float(info.get("total_seqs") or b)
        agg = hp["loss_agg"]

        def weight(m: dict[str, torch.Tensor]) -> float:
            if agg == "token_mean":
                share = float(m["response_mask"].sum()) / total_tokens
            elif agg == "seq_mean_token_mean":
                share = len(m["advantages"]) / total_seqs
            else:  # seq_mean_token_sum_norm: padded width -> generation budget
                share = (
                    len(m["advantages"])
                    / total_seqs
                    * m["response_mask"].shape[1]
                    / hp["gen_budget"]
                )
            return share * shards

        old: list[torch.Tensor | None] = [None] * len(micro)
        if hp["epochs_per_step"] > 1:  # the batch's policy before any of this step's updates
            with torch.no_grad(), self._autocast():
                old = [module.forward_train(m)["logprobs"].float() for m in micro]

        sums: dict[str, float] = dict.fromkeys(
            (*_TOKEN_STATS, "mismatch_kl", "grad_norm", "input_tokens", "padded_tokens"), 0.0
        )
        sums["batch_loss"] = 0.0
        tokens_seen = 0.0
        skipped = 0
        for epoch in range(hp["epochs_per_step"]):
            optimizer.zero_grad(set_to_none=True)
            for i, m in enumerate(micro):
                last = i == len(micro) - 1
                sync = (
                    contextlib.nullcontext()
                    if last or not hasattr(module, "no_sync")
                    else module.no_sync()
                )
                if old[i] is not None:
                    m = {**m, "old_logprobs": old[i]}
                with sync:
                    with self._autocast():
                        out = module.forward_train(m)
                    loss = self.compute_loss_for_module(
                        module_id=MODULE_ID, config=None, batch=m, fwd_out=out
                    )
                    share = weight(m)
                    (loss * share).backward()
                # The objective's value over the whole batch (as backpropagated; summed over
                # learners, shares add to 1), not a mean of micro-batch losses.
                sums["batch_loss"] += float(loss.detach()) * share / shards
                stats, old_lp = self._last_stats
                n_tok = float(m["response_mask"].sum())
                tokens_seen += n_tok
                sums["input_tokens"] += float(m["attention_mask"].sum())  # prompt + response
                sums["padded_tokens"] += float(m["attention_mask"].numel())
                mask = m["response_mask"]
                for k in _TOKEN_STATS:
                    sums[k] += float(stats[k]) * n_tok
                if epoch == 0:  # rollout engine vs learner on the same policy: k3 KL
                    mis = k3_kl(old_lp.double(), m["rollout_logprobs"].double())  # >= 0 in fp64
                    sums["mismatch_kl"] += float((mis * mask).sum())
            grad_norm = torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"])
            if torch.isfinite(grad_norm):
                optimizer.step()
            else:  # a non-finite gradient would poison AdamW's moments: skip the step
                skipped += 1
            sums["grad_norm"] += float(grad_norm)

        epochs = hp["epochs_per_step"]
        first_epoch_tokens = tokens_seen / epochs
        log = self.metrics.log_value
        for k in _TOKEN_STATS:
            log((MODULE_ID, "sum", k), sums[k], reduce="sum")
        log((MODULE_ID, "sum", "mismatch_kl"), sums["mismatch_kl"], reduce="sum")
        log((MODULE_ID, "sum", "batch_loss"), sums["batch_loss"] / epochs, reduce="sum")
        log((MODULE_ID, "sum", "input_tokens"), sums["input_tokens"], reduce="sum")
        log((MODULE_ID, "sum", "padded_tokens"), sums["padded_tokens"], reduce="sum")
        log((MODULE_ID, "sum", "tokens"), tokens_seen, reduce="sum")
        log((MODULE_ID, "sum", "first_epoch_tokens"), first_epoch_tokens, reduce="sum")
        log((MODULE_ID, "sum", "grad_norm"), sums["grad_norm"] / epochs, reduce="sum")
        log((MODULE_ID, "sum", "learners"), 1.0, reduce="sum")
        log((MODULE_ID, "sum", "skipped_steps"), float(skipped), reduce="sum")
        log((MODULE_ID, "sum", "lr"), float(optimizer.param_groups[0]["lr"]), reduce="sum")
        # RLlib logs this as the module's total_loss (the batch loss, mean over epochs).
        return {}, {MODULE_ID: torch.tensor(sums["batch_loss"] / epochs)}, {}

    # helpers called through LearnerGroup.foreach_learner -----------------------------------
    def hf_model(self) -> torch.nn.Module:
        module = self.module[MODULE_ID]
        return (module.unwrapped() if hasattr(module, "unwrapped") else module).lm

    def policy_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor]:
        """HF-named CPU tensors; under LoRA merged (``trainable_only``: the adapted layers)."""
        lm = self.hf_model()
        state = merged_state_dict(lm, trainable_only) if _is_peft_model(lm) else lm.state_dict()
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def save_checkpoint(self, path: str) -> None:
        if self._learner_index != 0:  # every learner holds the same weights after a step
            return
        lm = self.hf_model()
        if _is_peft_model(lm):
            # A plain HF model directory (merged weights) that engines and users load as is,
            # plus the adapter itself, which resume continues to train.
            # (save_pretrained drops tied keys from the dict it is given: pass a copy.)
            lm.get_base_model().save_pretrained(path, state_dict=dict(merged_state_dict(lm)))
            lm.save_pretrained(os.path.join(path, ADAPTER_DIR))
        else:
            lm.save_pretrained(path)
        optimizer = next(iter(self._named_optimizers.values()))
        torch.save(optimizer.state_dict(), os.path.join(path, OPTIMIZER_FILE))

    def load_optimizer(self, path: str) -> None:
        optimizer = next(iter(self._named_optimizers.values()))
        state = torch.load(
            os.path.join(path, OPTIMIZER_FILE), map_location=self._device, weights_only=True
        )
        optimizer.load_state_dict(state)


# -- the driver-side handle --------------------------------------------------------------------
@dataclass
class LearnerConfig:
    """Everything a learner needs; built from a JobSpec by :meth:`from_spec`."""

    model_path: str
    ref_model_path: str | None = None  # set when kl_coef > 0 (under LoRA: only a flag)
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = None  # rank, alpha, dropout, target_modules (LoraSpec)
    lora_adapter_path: str | None = None  # resume: the checkpoint's adapter/ (model_path = base)
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 16
    micro_batch_tokens: int | None = None  # set: micro-batches sized by padded tokens
    epochs_per_step: int = 1
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    loss_agg: str = "token_mean"
    tis_cap: float | None = None
    temperature: float = 1.0  # the rollout sampling temperature (0 = greedy -> 1)
    gen_budget: int = 256  # max_new_tokens: Dr. GRPO's constant normaliser
    num_learners: int = 0
    num_cpus_per_learner: float = 1.0
    num_gpus_per_learner: float = 0.0
    seed: int = 0
    call_timeout_s: float = 3600.0

    @classmethod
    def from_spec(
        cls, spec: Any, model_path: str, ref_model_path: str | None = None, **overrides: Any
    ) -> LearnerConfig:
        a = spec.algorithm
        kw: dict[str, Any] = dict(
            model_path=str(model_path),
            ref_model_path=str(ref_model_path) if a.kl_coef > 0 and ref_model_path else None,
            dtype=spec.model.dtype,
            attn_implementation=spec.model.attn_implementation,
            gradient_checkpointing=spec.model.gradient_checkpointing,
            lora=spec.model.lora.model_dump() if spec.model.lora is not None else None,
            lr=a.lr,
            weight_decay=a.weight_decay,
            warmup_steps=a.warmup_steps,
            max_grad_norm=a.max_grad_norm,
            micro_batch_size=a.micro_batch_size,
            micro_batch_tokens=a.micro_batch_tokens,
            epochs_per_step=a.epochs_per_step,
            clip_low=a.clip_low,
            clip_high=a.clip_high,
            kl_coef=a.kl_coef,
            loss_agg=a.loss_agg,
            tis_cap=a.tis_cap,
            temperature=spec.rollout.temperature or 1.0,
            gen_budget=spec.rollout.max_new_tokens,
            num_learners=a.num_learners,
            # The local learner (num_learners=0) uses the driver's GPU when it sees one.
            num_gpus_per_learner=1.0 if torch.cuda.is_available() else 0.0,
            seed=a.seed,
        )
        kw.update(overrides)
        return cls(**kw)


def _reduce(results: list[dict[str, Any]]) -> dict[str, float]:
    """Per-learner RLlib results -> the step's metrics (names: docs/design.md, "Metric names")."""
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    root = MetricsLogger(root=True)
    root.aggregate(results)
    sums = root.peek((MODULE_ID, "sum"))
    tokens = max(sums["tokens"], 1.0)
    learners = max(sums["learners"], 1.0)
    out = {k: sums[k] / tokens for k in _TOKEN_STATS}
    out["loss"] = sums["batch_loss"]  # exact under any micro-batching (see _update)
    out["mismatch/kl"] = sums["mismatch_kl"] / max(sums["first_epoch_tokens"], 1.0)
    out["grad_norm"] = sums["grad_norm"] / learners
    out["lr"] = sums["lr"] / learners
    out["learner/skipped_steps"] = sums["skipped_steps"]
    # Real (prompt + response) tokens through forward + backward, all epochs; and the share
    # of the computed positions that were padding.
    out["learner/tokens"] = sums["input_tokens"]
    out["learner/pad_frac"] = 1.0 - sums["input_tokens"] / max(sums["padded_tokens"], 1.0)
    return out


def _update_shard(learner: PolicyLearner, batch_ref: Any, timesteps: dict[str, Any]) -> Any:
    """Runs on learner i: train on its contiguous slice of the batch (read from the object store)."""
    import ray
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    batch = ray.get(batch_ref) if isinstance(batch_ref, ray.ObjectRef) else batch_ref
    n = len(batch["advantages"])
    start, end = _spans(n, timesteps["num_shards"])[learner._learner_index]
    shard = SampleBatch(_slice_batch(batch, start, end))
    return learner.update(
        batch=MultiAgentBatch({MODULE_ID: shard}, env_steps=end - start), timesteps=timesteps
    )


class Learner:
    """The trainer's learner: a ``LearnerGroup`` of :class:`PolicyLearner` s.

    ``num_learners == 0``: one learner in this process. ``> 0``: N Ray actors trained
    data-parallel (DDP over gloo on CPU, NCCL on GPU), each on a contiguous slice of the batch.
    """

    def __init__(self, config: LearnerConfig) -> None:
        import gymnasium as gym
        from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
        from ray.rllib.core.learner.learner_group import LearnerGroup
        from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        self.config = config
        # RLlib wants spaces; for a language model they are only labels (token ids in, one out).
        obs = gym.spaces.Box(0, np.iinfo(np.int32).max, (1,), np.int64)
        act = gym.spaces.Discrete(2**31 - 1)
        module_spec = RLModuleSpec(
            module_class=CausalLMModule,
            observation_space=obs,
            action_space=act,
            model_config={
                "path": config.model_path,
                "ref_path": config.ref_model_path,
                "dtype": config.dtype,
                "attn_implementation": config.attn_implementation,
                "temperature": config.temperature,
                "gradient_checkpointing": config.gradient_checkpointing,
                "lora": config.lora,
                "lora_adapter_path": config.lora_adapter_path,
            },
        )
        algo_config = (
            AlgorithmConfig()
            .environment(observation_space=obs, action_space=act)
            .learners(
                learner_class=PolicyLearner,
                num_learners=config.num_learners,
                num_cpus_per_learner=config.num_cpus_per_learner if config.num_learners else "auto",
                num_gpus_per_learner=config.num_gpus_per_learner,
                learner_config_dict=asdict(config),
            )
            .debugging(seed=config.seed)
        )
        self.group = LearnerGroup(
            config=algo_config,
            module_spec=MultiRLModuleSpec(rl_module_specs={MODULE_ID: module_spec}),
        )

    @property
    def num_shards(self) -> int:
        return max(1, self.config.num_learners)

    def _on_learners(self, func: Any, first_only: bool = False, **kwargs: Any) -> list[Any]:
        n = self.num_shards
        results = self.group.foreach_learner(
            func,
            remote_actor_ids=[0] if first_only and self.group.is_remote else None,
            timeout_seconds=None if self.group.is_local else self.config.call_timeout_s,
            **kwargs,
        )
        values = self.group._get_results(results)
        expected = 1 if first_only or self.group.is_local else n
        if len(values) != expected:
            raise TimeoutError(
                f"{expected - len(values)} learner(s) did not answer within {self.config.call_timeout_s:.0f} s"
            )
        return values

    def update(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        """One optimizer step (per epoch) on ``batch`` (from :func:`make_train_batch`)."""
        b = len(batch["advantages"])
        if b < self.num_shards:
            raise ValueError(
                f"a batch of {b} sequences cannot be split across {self.num_shards} learners"
            )
        timesteps = {
            "step": int(step),
            "num_shards": self.num_shards,
            "total_tokens": float(batch["response_mask"].sum()),
            "total_seqs": float(b),
        }
        if self.group.is_local:
            from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

            ma_batch = MultiAgentBatch({MODULE_ID: SampleBatch(batch)}, env_steps=b)
            results = self.group.update(batch=ma_batch, timesteps=timesteps)
        else:
            import ray

            ref = ray.put(batch)  # once; every learner reads its slice from the object store
            results = self._on_learners(_update_shard, batch_ref=ref, timesteps=timesteps)
        return _reduce(results)

    def state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor]:
        """The policy's weights (HF parameter names, CPU tensors; LoRA adapters merged in).

        ``trainable_only``: only the weights training can change: everything for full
        fine-tuning, the adapted layers under LoRA (what a weight sync needs to send).
        """
        return self._on_learners(
            lambda learner: learner.policy_state_dict(trainable_only), first_only=True
        )[0]

    def save(self, path: str | Path) -> None:
        """Write the policy as an HF model directory plus ``optimizer.pt`` into ``path``
        (under LoRA: the merged model, plus the adapter in ``adapter/``)."""
        target = str(path)
        self._on_learners(lambda learner: learner.save_checkpoint(target), first_only=True)

    def load_optimizer(self, path: str | Path) -> None:
        """Restore every learner's optimizer state from a checkpoint directory."""
        target = str(path)
        self._on_learners(lambda learner: learner.load_optimizer(target))

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.group.shutdown()


__all__ = [
    "ADAPTER_DIR",
    "CausalLMModule",
    "Learner",
    "LearnerConfig",
    "PolicyLearner",
    "make_train_batch",
    "merged_state_dict",
    "plan_micro_batches",
]
