"""The learner the training loop drives: :class:`Learner`.

- ``num_learners: 0`` (CPU runs): a :class:`DriverLearner` in the driver's own process, plain
  torch around :func:`~rlvr.train.update.gradient_step`.
- ``num_learners: N``: RLlib's ``LearnerGroup`` of N data-parallel ``TorchLearner`` actors
  (:mod:`rlvr.train._rllib`; DDP, or FSDP2 under ``algorithm.sharding: fsdp``,
  :mod:`rlvr.train.fsdp`); each batch is sharded through the object store.

Either way every remote call is bounded by a timeout, and weights and checkpoints are
exported in HF format. Internals: docs/training.md, "Learner internals".
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.models.causal_lm import PolicyModel, learner_device
from rlvr.rollout.hf import cpu_threads
from rlvr.train.update import UpdateConfig, gradient_step, rows_with_gradient

MODULE_ID = "policy"
OPTIMIZER_FILE = "optimizer.pt"


# -- the driver-side handle --------------------------------------------------------------------
@dataclass(kw_only=True)
class LearnerConfig(UpdateConfig):
    """Everything a learner needs (the gradient step's :class:`UpdateConfig` and the model,
    optimizer and placement); built from a JobSpec by :meth:`from_spec`."""

    model_path: str
    ref_model_path: str | None = None  # set when kl_coef > 0 (under LoRA: only a flag)
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    share_prompt_forward: bool = True
    lora: dict[str, Any] | None = None  # rank, alpha, dropout, target_modules (LoraSpec)
    lora_adapter_path: str | None = None  # resume: the checkpoint's adapter/ (model_path = base)
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    temperature: float = 1.0  # the rollout sampling temperature (0 = greedy -> 1)
    num_learners: int = 0
    sharding: str = "none"  # algorithm.sharding: none (DDP) | fsdp (rlvr.train.fsdp)
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
            share_prompt_forward=spec.model.share_prompt_forward,
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
            ratio_level=a.ratio_level,
            objective=a.objective,
            entropy_coef=a.entropy_coef,
            kl_mode=a.kl_mode,
            kl_estimator=a.kl_estimator,
            mini_batches=a.mini_batches,
            skip_zero_advantage_rows=a.skip_zero_advantage_rows,
            temperature=spec.rollout.temperature or 1.0,
            gen_budget=spec.rollout.max_new_tokens,
            num_learners=a.num_learners,
            sharding=a.sharding,
            # The local learner (num_learners=0) uses the driver's GPU when it sees one.
            num_gpus_per_learner=1.0 if learner_device() == "cuda" else 0.0,
            seed=a.seed,
        )
        kw.update(overrides)
        return cls(**kw)


# -- what both learners do the same way -------------------------------------------------------
def policy_kwargs(config: LearnerConfig) -> dict[str, Any]:
    """:class:`~rlvr.models.causal_lm.PolicyModel` keyword arguments (besides the path)."""
    return {
        "ref_path": config.ref_model_path,
        "dtype": config.dtype,
        "attn_implementation": config.attn_implementation,
        "temperature": config.temperature,
        "gradient_checkpointing": config.gradient_checkpointing,
        "lora": config.lora,
        "lora_adapter_path": config.lora_adapter_path,
        "entropy_grad": config.entropy_coef > 0,
        "share_prompt_forward": config.share_prompt_forward,
    }


def new_optimizer(params: list[torch.nn.Parameter], hp: LearnerConfig) -> torch.optim.Optimizer:
    """AdamW over ``params``, the trainable ones (not the KL reference, not LoRA's base)."""
    return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)


def set_warmup_lr(optimizer: torch.optim.Optimizer, hp: LearnerConfig, step: int) -> None:
    """Linear warmup over ``hp.warmup_steps`` steps, then ``hp.lr``."""
    warm = hp.warmup_steps
    lr = hp.lr * (min(1.0, step / warm) if warm > 0 else 1.0)
    for group in optimizer.param_groups:
        group["lr"] = lr


def cpu_state_dict(policy: PolicyModel, trainable_only: bool) -> dict[str, torch.Tensor]:
    """HF-named CPU copies of the policy's weights (under LoRA merged)."""
    state = policy.hf_state_dict(trainable_only)
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def save_policy(policy: PolicyModel, optimizer: torch.optim.Optimizer, path: str) -> None:
    """The HF model directory plus ``optimizer.pt`` (an unsharded learner's checkpoint)."""
    policy.save_pretrained(path)
    torch.save(optimizer.state_dict(), os.path.join(path, OPTIMIZER_FILE))


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, path: str, device: torch.device | str
) -> None:
    """Restore ``optimizer`` from an unsharded checkpoint directory."""
    from rlvr.train.fsdp import SHARDED_DIR

    if os.path.isdir(os.path.join(path, SHARDED_DIR)):
        raise ValueError(
            f"checkpoint {path} holds sharded learner state (it was written with "
            "algorithm.sharding=fsdp): resume it with algorithm.sharding=fsdp"
        )
    state = torch.load(os.path.join(path, OPTIMIZER_FILE), map_location=device, weights_only=True)
    optimizer.load_state_dict(state)


# -- the learner in the driver -------------------------------------------------------------------
class DriverLearner:
    """The learner when it is the driver itself (``num_learners: 0``), in plain torch.

    It does what RLlib's local ``TorchLearner`` did for :class:`Learner` and nothing else, so
    the same batches give the same weights (tests/train/test_learner.py checks it against a
    learner actor): seeding as RLlib's ``debugging(seed=...)`` does, before the model is
    built; the batch's arrays as tensors with floats as float32; the module in train mode;
    :func:`~rlvr.train.update.gradient_step`; the same optimizer, warmup and checkpoint
    files. Why not RLlib here: importing it (Tune, pandas, Ray Data) and building its
    ``LearnerGroup`` took ~2.5 s of a CPU run's ~13 s start and ~0.2 GB, for one process that
    needs none of it (docs/benchmarks.md, "Async RL"). Attributes mirror
    :class:`~rlvr.train._rllib.PolicyLearner`'s where the weight sender reads them.
    """

    _learner_index = 0
    sharded = False

    def __init__(self, config: LearnerConfig) -> None:
        _seed_everything(config.seed)
        self.hp = config
        self._device = torch.device("cuda" if config.num_gpus_per_learner > 0 else "cpu")
        self.policy = PolicyModel(config.model_path, **policy_kwargs(config)).to(self._device)
        if self._device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = new_optimizer(params, config)

    def update(self, batch: dict[str, np.ndarray], timesteps: dict[str, Any]) -> dict[str, float]:
        set_warmup_lr(self.optimizer, self.hp, int(timesteps.get("step", 1)))
        tensors = {k: _as_tensor(v, self._device) for k, v in batch.items()}
        self.policy.train()
        stats = gradient_step(
            self.policy,
            self.optimizer,
            tensors,
            self.hp,
            device=self._device,
            total_tokens=timesteps.get("total_tokens"),
            total_seqs=timesteps.get("total_seqs"),
        )
        return stats.metrics()

    def policy_model(self) -> PolicyModel:
        return self.policy

    def policy_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor]:
        return cpu_state_dict(self.policy, trainable_only)

    def save_checkpoint(self, path: str) -> None:
        save_policy(self.policy, self.optimizer, path)

    def load_optimizer(self, path: str) -> None:
        load_optimizer_state(self.optimizer, path, self._device)

    def state_bytes(self) -> dict[str, int]:
        from rlvr.train.fsdp import state_bytes

        return state_bytes(self.policy, self.optimizer)


def _seed_everything(seed: int) -> None:
    """What RLlib's learners do with ``debugging(seed=...)``: seed random, numpy and torch;
    on a torch without CUDA also turn on deterministic algorithms."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.version.cuda is None:
        torch.use_deterministic_algorithms(True)
    else:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _as_tensor(value: Any, device: torch.device) -> Any:
    """A batch array as the learner's tensor: floats as float32 (as RLlib converts them)."""
    if isinstance(value, np.ndarray) and (value.dtype == object or value.dtype.type is np.str_):
        return value
    tensor = value if torch.is_tensor(value) else torch.from_numpy(np.asarray(value))
    if tensor.is_floating_point() and tensor.dtype != torch.float16:
        tensor = tensor.float()
    return tensor.to(device)


def _push_weights(
    learner: Any,  # a DriverLearner or an RLlib PolicyLearner
    engines: list[Any],
    method: str,
    version: int,
    trainable_only: bool,
    timeout_s: float,
    after_calls: list[int] | None = None,
) -> dict[str, Any] | None:
    """Runs where learner 0 lives (sharded: on every learner, which all gather and learner 0
    sends): send its weights straight to the engines through a
    :class:`~rlvr.rollout.weight_sync.WeightSender` (kept on the learner between syncs)."""
    from rlvr.rollout.weight_sync import Weights, WeightSender

    first = learner._learner_index == 0
    weights: Weights
    if learner.sharded:  # gathered one tensor at a time as the sender packs them
        from rlvr.train.fsdp import drain, gathered_weights

        weights = gathered_weights(learner.policy_model().lm, trainable_only, keep=first)
        if not first:
            with torch.no_grad():
                drain(weights)
            return None
    # the same engines keep the same sender (an engine in the driver has no actor id)
    key = (tuple(e._actor_id.hex() if hasattr(e, "_actor_id") else id(e) for e in engines), method)
    if getattr(learner, "_sender_key", None) != key:
        learner._sender = WeightSender(engines, method, timeout_s=timeout_s, fallback=True)
        learner._sender_key = key
    with torch.no_grad():
        if not learner.sharded:
            weights = learner.policy_model().hf_state_dict(trainable_only)
        stats = learner._sender.push(weights, version, after_calls)
    return {**stats, "method": learner._sender.method}


class Learner:
    """The trainer's learner.

    ``num_learners == 0``: one :class:`DriverLearner` in this process. ``> 0``: RLlib's
    ``LearnerGroup`` of N Ray actors (:mod:`rlvr.train._rllib`) trained data-parallel (DDP over
    gloo on CPU, NCCL on GPU), each on a contiguous slice of the batch.
    """

    def __init__(self, config: LearnerConfig, placement_group: Any = None) -> None:
        """``placement_group``: the learners' reserved group (the placement plan's,
        :func:`rlvr.plan.reserve.reserve`); None: Ray places the learner actors."""
        from rlvr.train.fsdp import check_sharding

        check_sharding(config)
        self.config = config
        self._driver: DriverLearner | None = None
        self.group: Any = None  # RLlib's LearnerGroup (learner actors)
        if config.num_learners == 0:
            self._driver = DriverLearner(config)
        else:
            from rlvr.train._rllib import learner_group

            self.group = learner_group(config, placement_group)

    @property
    def num_shards(self) -> int:
        return max(1, self.config.num_learners)

    @property
    def sharded(self) -> bool:
        return self.config.sharding == "fsdp"

    def _on_first(self, func: Any, **kwargs: Any) -> Any:
        """Learner 0's answer to ``func``; sharded, every learner runs it (it gathers: a
        collective) and the others answer None."""
        if not self.sharded:
            return self._on_learners(func, first_only=True, **kwargs)[0]
        return next((v for v in self._on_learners(func, **kwargs) if v is not None), None)

    def _on_learners(self, func: Any, first_only: bool = False, **kwargs: Any) -> list[Any]:
        if self._driver is not None:
            return [func(self._driver, **kwargs)]
        n = self.num_shards
        results = self.group.foreach_learner(
            func,
            remote_actor_ids=[0] if first_only else None,
            timeout_seconds=self.config.call_timeout_s,
            **kwargs,
        )
        values = self.group._get_results(results)
        expected = 1 if first_only else n
        if len(values) != expected:
            raise TimeoutError(
                f"{expected - len(values)} learner(s) did not answer within {self.config.call_timeout_s:.0f} s"
            )
        return values

    def update(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        """One optimizer step (per epoch) on ``batch`` (from
        :func:`~rlvr.train.batch.make_train_batch`); its metrics, named as in
        :data:`~rlvr.train.update.LEARNER_METRICS`."""
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
        # rows with no gradient stay out of forward and backward; the loss is still
        # normalised by the whole batch (timesteps above), so the step is unchanged
        rows = rows_with_gradient(batch["advantages"].tolist(), self.config)
        skipped = 0
        # (every learner needs a row: with fewer rows than learners, all of them are computed)
        if rows is not None and self.num_shards <= len(rows) < b:
            skipped = b - len(rows)
            batch = {k: v[rows] for k, v in batch.items()}
        filler = 0
        if self.sharded:  # equal rows per learner: every FSDP pass is a collective
            from rlvr.train.fsdp import pad_rows

            batch, filler = pad_rows(batch, self.num_shards)
        if self._driver is not None:
            metrics = self._driver.update(batch, timesteps)
        else:
            import ray

            from rlvr.train._rllib import reduce, update_shard

            ref = ray.put(batch)  # once; every learner reads its slice from the object store
            metrics = reduce(self._on_learners(update_shard, batch_ref=ref, timesteps=timesteps))
        if filler:
            from rlvr.train.fsdp import discount_filler

            discount_filler(metrics, filler * self.config.epochs_per_step)
        metrics["learner/skipped_rows"] = float(skipped)
        return metrics

    def state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor]:
        """The policy's weights (HF parameter names, CPU tensors; LoRA adapters merged in).

        ``trainable_only``: only the weights training can change: everything for full
        fine-tuning, the adapted layers under LoRA (what a weight sync needs to send).
        """
        return self._on_first(lambda learner: learner.policy_state_dict(trainable_only))

    def push_weights(
        self,
        engines: list[Any],
        method: str = "auto",
        version: int = 0,
        trainable_only: bool = True,
        timeout_s: float = 1800.0,
        after_calls: list[int] | None = None,
    ) -> dict[str, Any]:
        """Send the policy's weights from learner 0 to the rollout ``engines`` (actor handles)
        by ``method`` (the plan's; one the devices do not allow falls back to the object
        store). With learner actors the weights go actor to actor and this process holds
        none; with ``num_learners == 0`` the learner, and so the sender, is this process.
        ``after_calls``: the generate calls made to each engine before this push
        (``ReplicaGroup.calls_made()``): an engine loads the weights only after those, even
        when the push (from another process) reaches it first.
        Returns the sync's stats: ``bytes``, ``method`` and timings in seconds."""
        return self._on_first(
            _push_weights,
            engines=list(engines),
            method=method,
            version=int(version),
            trainable_only=trainable_only,
            timeout_s=timeout_s,
            after_calls=after_calls,
        )

    def save(self, path: str | Path) -> None:
        """Write the policy as an HF model directory plus ``optimizer.pt`` into ``path``
        (under LoRA: the merged model, plus the adapter in ``adapter/``). Sharded: the
        gathered HF directory plus every learner's shards in ``sharded/`` instead of
        ``optimizer.pt`` (:func:`rlvr.train.fsdp.save_checkpoint`)."""
        target = str(path)
        self._on_first(lambda learner: learner.save_checkpoint(target))

    def load_optimizer(self, path: str | Path) -> None:
        """Restore every learner's optimizer state from a checkpoint directory (sharded:
        its weight and optimizer shards)."""
        target = str(path)
        self._on_learners(lambda learner: learner.load_optimizer(target))

    def state_bytes(self) -> list[dict[str, int]]:
        """Each learner's parameter and optimizer bytes (what sharding divides)."""
        return self._on_learners(lambda learner: learner.state_bytes())

    def shutdown(self) -> None:
        if self.group is not None:
            with contextlib.suppress(Exception):
                self.group.shutdown()


__all__ = ["DriverLearner", "Learner", "LearnerConfig"]
