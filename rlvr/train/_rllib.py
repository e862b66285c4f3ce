"""The learner actors as RLlib (new API stack) runs them: a ``LearnerGroup`` of N
data-parallel ``TorchLearner`` s, each training a :class:`~rlvr.models.causal_lm.PolicyModel`.

- :class:`CausalLMModule` is the ``TorchRLModule`` around the policy model.
- :class:`PolicyLearner` is the ``TorchLearner``: its update hook runs
  :func:`~rlvr.train.update.gradient_step` on the learner's shard and logs the step's
  :class:`~rlvr.train.update.StepStats` as sums, reduced across learners (:func:`reduce`).
- :func:`learner_group` builds the group of ``num_learners`` Ray actors (DDP, or FSDP2 under
  ``algorithm.sharding: fsdp``, :mod:`rlvr.train.fsdp`).

Imported only where learner actors are wanted: RLlib's import (Tune, pandas, Ray Data) costs
~2 s and ~0.2 GB, which a learner in the driver (:mod:`rlvr.train.learner`) does without.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from rlvr.models.causal_lm import PolicyModel
from rlvr.rollout._common import split_evenly
from rlvr.rollout.hf import cpu_threads
from rlvr.train.batch import slice_batch
from rlvr.train.learner import (
    MODULE_ID,
    LearnerConfig,
    cpu_state_dict,
    load_optimizer_state,
    new_optimizer,
    policy_kwargs,
    save_policy,
    set_warmup_lr,
)
from rlvr.train.update import StepStats, gradient_step, micro_batch_loss


# -- the RLModule ------------------------------------------------------------------------------
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
        optimizer = new_optimizer(params, self.hp)
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
        set_warmup_lr(self._optimizer(), self.hp, int(timesteps.get("step", 1)))

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
        return cpu_state_dict(self.policy_model(), trainable_only)

    def save_checkpoint(self, path: str) -> None:
        if self.sharded:
            from rlvr.train import fsdp

            fsdp.save_checkpoint(self.policy_model(), self._train_module(), self._optimizer(), path)
            return
        if self._learner_index == 0:  # every learner holds the same weights after a step
            save_policy(self.policy_model(), self._optimizer(), path)

    def load_optimizer(self, path: str) -> None:
        if self.sharded:
            from rlvr.train import fsdp

            fsdp.load_checkpoint(self._train_module(), self._optimizer(), path)
            return
        load_optimizer_state(self._optimizer(), path, self._device)

    def state_bytes(self) -> dict[str, int]:
        """Parameter and optimizer bytes this learner holds (:func:`rlvr.train.fsdp.state_bytes`)."""
        from rlvr.train.fsdp import state_bytes

        return state_bytes(self._train_module(), self._optimizer())


def learner_group(config: LearnerConfig, placement_group: Any = None) -> Any:
    """A ``LearnerGroup`` of ``config.num_learners`` :class:`PolicyLearner` actors."""
    import gymnasium as gym
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
    from ray.rllib.core.learner.learner_group import LearnerGroup
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    # RLlib wants spaces; for a language model they are only labels (token ids in, one out).
    obs = gym.spaces.Box(0, np.iinfo(np.int32).max, (1,), np.int64)
    act = gym.spaces.Discrete(2**31 - 1)
    module_spec = RLModuleSpec(
        module_class=CausalLMModule,
        observation_space=obs,
        action_space=act,
        model_config={"path": config.model_path, **policy_kwargs(config)},
    )
    algo_config = (
        AlgorithmConfig()
        .environment(observation_space=obs, action_space=act)
        .learners(
            learner_class=PolicyLearner,
            num_learners=config.num_learners,
            num_cpus_per_learner=config.num_cpus_per_learner,
            num_gpus_per_learner=config.num_gpus_per_learner,
            learner_config_dict=asdict(config),
        )
        .debugging(seed=config.seed)
    )
    return LearnerGroup(
        config=algo_config,
        module_spec=MultiRLModuleSpec(rl_module_specs={MODULE_ID: module_spec}),
        placement_group=placement_group,
    )


def reduce(results: list[dict[str, Any]]) -> dict[str, float]:
    """Per-learner RLlib results (StepStats logged as sums) -> the step's learner metrics."""
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    root = MetricsLogger(root=True)
    root.aggregate(results)
    return StepStats(**root.peek((MODULE_ID, "sum"))).metrics()


def update_shard(learner: PolicyLearner, batch_ref: Any, timesteps: dict[str, Any]) -> Any:
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
