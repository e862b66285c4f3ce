"""The learner as RLlib (new API stack) runs it: a ``LearnerGroup`` of N data-parallel
``TorchLearner`` s, each training a :class:`~rlvr.models.causal_lm.PolicyModel`.

- :class:`CausalLMModule` is the ``TorchRLModule`` around the policy model.
- :class:`PolicyLearner` is the ``TorchLearner``: its update hook runs
  :func:`~rlvr.train.update.gradient_step` on the learner's shard and logs the step's
  :class:`~rlvr.train.update.StepStats` as sums, reduced across learners.
- :class:`Learner` is what the loop uses: it builds the group (local when
  ``num_learners == 0``, else N Ray actors joined by DDP, or by FSDP2 under
  ``algorithm.sharding: fsdp``, :mod:`rlvr.train.fsdp`), shards each batch through the
  object store, bounds every remote call with a timeout, and exports weights and
  checkpoints in HF format. Internals: docs/training.md, "Learner internals".
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.models.causal_lm import PolicyModel, learner_device
from rlvr.rollout._common import split_evenly
from rlvr.rollout.hf import cpu_threads
from rlvr.train.batch import slice_batch
from rlvr.train.update import StepStats, UpdateConfig, gradient_step, micro_batch_loss

MODULE_ID = "policy"
OPTIMIZER_FILE = "optimizer.pt"


# -- the RLModule ----------------------------------------------------------------------------
def _import_rllib():
    import logging

    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

    # RLModule.__init__ itself builds a legacy RLModuleConfig and warns that it is
    # deprecated, on every construction (Ray 2.60); nothing in our call is deprecated.
    logging.getLogger("ray._common.deprecation").addFilter(
        lambda record: "RLModule(config=" not in record.getMessage()
    )

    return TorchRLModule


class CausalLMModule(_import_rllib()):  # type: ignore[misc]  # RLlib base, imported lazily
    """A :class:`~rlvr.models.causal_lm.PolicyModel` as an RLlib ``TorchRLModule``;
    ``model_config`` holds its keyword arguments and ``path``."""

    def setup(self) -> None:
        cfg = dict(self.model_config)
        self.policy = PolicyModel(cfg.pop("path"), **cfg)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self.policy.forward_train(batch)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            return self._forward_train(batch)


# -- the Learner -----------------------------------------------------------------------------
def _import_torch_learner():
    from ray.rllib.core.learner.torch.torch_learner import TorchLearner

    return TorchLearner


class PolicyLearner(_import_torch_learner()):  # type: ignore[misc]  # the same
    """GRPO-family updates through :func:`~rlvr.train.update.gradient_step`.
    Hyperparameters: ``config.learner_config_dict`` (a :class:`LearnerConfig` as a dict)."""

    def build(self) -> None:
        self.hp = LearnerConfig(**self.config.learner_config_dict)
        super().build()  # calls configure_optimizers_for_module
        if self._device.type == "cpu":
            torch.set_num_threads(cpu_threads())

    @property
    def sharded(self) -> bool:
        return self.hp.sharding == "fsdp"

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self._module[module_id]
        if self.sharded:  # before the optimizer: its parameters become the shards
            from rlvr.train.fsdp import shard_policy

            shard_policy(module.policy, self.hp.dtype, self._device)
        params = [p for p in module.parameters() if p.requires_grad]  # not the reference
        optimizer = torch.optim.AdamW(params, lr=self.hp.lr, weight_decay=self.hp.weight_decay)
        # lr is set by before_gradient_based_update (linear warmup), not an RLlib schedule.
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params)

    def _make_modules_ddp_if_necessary(self) -> None:
        if not self.sharded:  # FSDP: sharded in configure_optimizers_for_module instead
            super()._make_modules_ddp_if_necessary()

    def _optimizer(self) -> torch.optim.Optimizer:
        return next(iter(self._named_optimizers.values()))

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._batch_info = dict(timesteps)
        step = int(timesteps.get("step", 1))
        warm = self.hp.warmup_steps
        lr = self.hp.lr * (min(1.0, step / warm) if warm > 0 else 1.0)
        for group in self._optimizer().param_groups:
            group["lr"] = lr

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        # RLlib's default logs the lr under its own key; StepStats carries `lr` instead.
        pass

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        """One micro-batch's policy loss (abstract in RLlib; :meth:`_update` does not use it)."""
        return micro_batch_loss(fwd_out, batch, self.hp)[0]

    def _update(self, batch: dict[str, Any], **kwargs) -> tuple[Any, Any, Any]:
        info = self._batch_info
        stats = gradient_step(
            self.module[MODULE_ID],
            self._optimizer(),
            batch[MODULE_ID],
            self.hp,
            device=self._device,
            shards=int(info.get("num_shards", 1)),
            total_tokens=info.get("total_tokens"),
            total_seqs=info.get("total_seqs"),
        )
        for name, value in asdict(stats).items():  # summed across learners by _reduce
            self.metrics.log_value((MODULE_ID, "sum", name), value, reduce="sum")
        # RLlib logs this as the module's total_loss (the batch loss, mean over epochs).
        return {}, {MODULE_ID: torch.tensor(stats.batch_loss)}, {}

    # helpers called through LearnerGroup.foreach_learner -----------------------------------
    def _train_module(self) -> torch.nn.Module:
        module = self.module[MODULE_ID]
        return module.unwrapped() if hasattr(module, "unwrapped") else module

    def policy_model(self) -> PolicyModel:
        return self._train_module().policy

    def policy_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor] | None:
        """HF-named CPU tensors; under LoRA merged (``trainable_only``: the adapted layers).
        Sharded: gathered by every learner, returned by learner 0 (None elsewhere)."""
        if self.sharded:
            from rlvr.train.fsdp import gather_full

            state = gather_full(self.policy_model().lm, trainable_only)
            return state if self._learner_index == 0 else None
        state = self.policy_model().hf_state_dict(trainable_only)
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def save_checkpoint(self, path: str) -> None:
        if self.sharded:
            from rlvr.train import fsdp

            fsdp.save_checkpoint(self.policy_model(), self._train_module(), self._optimizer(), path)
            return
        if self._learner_index != 0:  # every learner holds the same weights after a step
            return
        self.policy_model().save_pretrained(path)
        torch.save(self._optimizer().state_dict(), os.path.join(path, OPTIMIZER_FILE))

    def load_optimizer(self, path: str) -> None:
        from rlvr.train import fsdp

        if self.sharded:
            fsdp.load_checkpoint(self._train_module(), self._optimizer(), path)
            return
        if os.path.isdir(os.path.join(path, fsdp.SHARDED_DIR)):
            raise ValueError(
                f"checkpoint {path} holds sharded learner state (it was written with "
                "algorithm.sharding=fsdp): resume it with algorithm.sharding=fsdp"
            )
        state = torch.load(
            os.path.join(path, OPTIMIZER_FILE), map_location=self._device, weights_only=True
        )
        self._optimizer().load_state_dict(state)

    def state_bytes(self) -> dict[str, int]:
        """Parameter and optimizer bytes this learner holds (:func:`rlvr.train.fsdp.state_bytes`)."""
        from rlvr.train.fsdp import state_bytes

        return state_bytes(self._train_module(), self._optimizer())


# -- the driver-side handle --------------------------------------------------------------------
@dataclass(kw_only=True)
class LearnerConfig(UpdateConfig):
    """Everything a learner needs (the gradient step's :class:`UpdateConfig` and the model,
    optimizer and placement); built from a JobSpec by :meth:`from_spec`."""

    model_path: str
    ref_model_path: str | None = None  # set when kl_coef > 0 (under LoRA: only a flag)
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
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


def _reduce(results: list[dict[str, Any]]) -> dict[str, float]:
    """Per-learner RLlib results (StepStats logged as sums) -> the step's learner metrics."""
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    root = MetricsLogger(root=True)
    root.aggregate(results)
    return StepStats(**root.peek((MODULE_ID, "sum"))).metrics()


def _push_weights(
    learner: PolicyLearner,
    engines: list[Any],
    method: str,
    version: int,
    trainable_only: bool,
    timeout_s: float,
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
        stats = learner._sender.push(weights, version)
    return {**stats, "method": learner._sender.method}


def _update_shard(learner: PolicyLearner, batch_ref: Any, timesteps: dict[str, Any]) -> Any:
    """Runs on learner i: train on its contiguous slice of the batch (read from the object store)."""
    import ray
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    batch = ray.get(batch_ref) if isinstance(batch_ref, ray.ObjectRef) else batch_ref
    n = len(batch["advantages"])
    start, end = split_evenly(n, timesteps["num_shards"])[learner._learner_index]
    shard = SampleBatch(slice_batch(batch, start, end))
    return learner.update(
        batch=MultiAgentBatch({MODULE_ID: shard}, env_steps=end - start), timesteps=timesteps
    )


class Learner:
    """The trainer's learner: a ``LearnerGroup`` of :class:`PolicyLearner` s.

    ``num_learners == 0``: one learner in this process. ``> 0``: N Ray actors trained
    data-parallel (DDP over gloo on CPU, NCCL on GPU), each on a contiguous slice of the batch.
    """

    def __init__(self, config: LearnerConfig, placement_group: Any = None) -> None:
        """``placement_group``: the learners' reserved group (the placement plan's,
        :func:`rlvr.plan.reserve.reserve`); None: Ray places the learner actors."""
        import gymnasium as gym
        from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
        from ray.rllib.core.learner.learner_group import LearnerGroup
        from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        from rlvr.train.fsdp import check_sharding

        check_sharding(config)
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
                "entropy_grad": config.entropy_coef > 0,
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
            placement_group=placement_group,
        )

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
        """One optimizer step (per epoch) on ``batch`` (from
        :func:`~rlvr.train.batch.make_train_batch`); its metrics, named as in
        :data:`~rlvr.train.update.LEARNER_METRICS`."""
        b = len(batch["advantages"])
        if b < self.num_shards:
            raise ValueError(
                f"a batch of {b} sequences cannot be split across {self.num_shards} learners"
            )
        filler = 0
        if self.sharded:  # equal rows per learner: every FSDP pass is a collective
            from rlvr.train.fsdp import pad_rows

            batch, filler = pad_rows(batch, self.num_shards)
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
        metrics = _reduce(results)
        if filler:
            from rlvr.train.fsdp import discount_filler

            discount_filler(metrics, filler * self.config.epochs_per_step)
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
    ) -> dict[str, Any]:
        """Send the policy's weights from learner 0 to the rollout ``engines`` (actor handles)
        by ``method`` (the plan's; one the devices do not allow falls back to the object
        store). With learner actors the weights go actor to actor and this process holds
        none; with ``num_learners == 0`` the learner, and so the sender, is this process.
        Returns the sync's stats: ``bytes``, ``method`` and timings in seconds."""
        return self._on_first(
            _push_weights,
            engines=list(engines),
            method=method,
            version=int(version),
            trainable_only=trainable_only,
            timeout_s=timeout_s,
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
        with contextlib.suppress(Exception):
            self.group.shutdown()


__all__ = ["CausalLMModule", "Learner", "LearnerConfig", "PolicyLearner"]
