"""The new options through the gradient step (a real tiny model, no RLlib): mini-batches
are sequential optimizer steps with the ratio against the rollout policy; REINFORCE++ with
the KL in the reward trains on its token advantages; the entropy bonus has a gradient; and
the job spec refuses inconsistent choices naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.models.causal_lm import PolicyModel
from rlvr.rollout.base import Completion
from rlvr.train.algorithms import reinforce_pp_token_advantages
from rlvr.train.batch import make_train_batch, slice_batch, split_micro_batches
from rlvr.train.update import UpdateConfig, gradient_step, micro_batch_loss


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(5)
    prompts = [rng.integers(7, 60, int(n)).tolist() for n in (4, 8, 6, 11)]
    comps = []
    for i in range(8):
        n = int(rng.integers(2, 10))
        comps.append(Completion(i // 2, rng.integers(7, 60, n).tolist(), "", [-1.0] * n, "stop"))
    adv = np.array([1.0, -1.0, 0.5, -0.2, 2.0, -0.7, 0.3, -1.5], dtype=np.float32)
    return {k: torch.as_tensor(v) for k, v in make_train_batch(prompts, comps, adv, 0).items()}


def _model(path):
    torch.manual_seed(0)
    model = PolicyModel(str(path), temperature=1.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    return model, opt


def _manual_step(model, opt, m, hp):
    opt.zero_grad(set_to_none=True)
    loss = micro_batch_loss(model.forward_train(m), m, hp)[0]
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()


def test_mini_batches_are_sequential_steps_with_the_ratio_against_the_rollout_policy(
    random_model_dir, batch
):
    hp = UpdateConfig(micro_batch_size=16, mini_batches=2, gen_budget=16)
    model, opt = _model(random_model_dir)
    stats = gradient_step(model, opt, batch, hp)

    ref_model, ref_opt = _model(random_model_dir)
    halves = [split_micro_batches(slice_batch(batch, a, b), 16)[0] for a, b in ((0, 4), (4, 8))]
    with torch.no_grad():  # the rollout policy's logprobs, before either step
        old = [ref_model.forward_train(h)["logprobs"].float() for h in halves]
    for h, o in zip(halves, old, strict=True):
        _manual_step(ref_model, ref_opt, {**h, "old_logprobs": o}, hp)

    theirs = ref_model.lm.state_dict()
    for k, a in model.lm.state_dict().items():
        assert torch.allclose(a, theirs[k], atol=1e-6), k
    m = stats.metrics()
    assert m["ratio_mean"] != pytest.approx(1.0, abs=1e-7)  # the 2nd mini-batch is off-policy
    assert m["learner/tokens"] == float(batch["attention_mask"].sum())


def test_reinforce_pp_in_reward_mode_trains_on_whitened_token_returns(random_model_dir, batch):
    hp = UpdateConfig(micro_batch_size=16, kl_mode="reward", gen_budget=16)
    model, opt = _model(random_model_dir)
    gradient_step(model, opt, batch, hp)

    ref_model, ref_opt = _model(random_model_dir)
    m = split_micro_batches(batch, 16)[0]
    token_adv = reinforce_pp_token_advantages(
        m["advantages"], torch.zeros(m["response_mask"].shape), m["response_mask"], 0.0
    )
    _manual_step(ref_model, ref_opt, {**m, "token_advantages": token_adv}, hp)
    theirs = ref_model.lm.state_dict()
    for k, a in model.lm.state_dict().items():
        assert torch.allclose(a, theirs[k], atol=1e-6), k


def test_entropy_bonus_reaches_the_weights(random_model_dir, batch):
    def step(coef):
        torch.manual_seed(0)
        model = PolicyModel(str(random_model_dir), temperature=1.0, entropy_grad=coef > 0)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        zero = {**batch, "advantages": torch.zeros_like(batch["advantages"])}
        gradient_step(model, opt, zero, UpdateConfig(micro_batch_size=16, entropy_coef=coef))
        return model.lm.state_dict()

    plain, bonus = step(0.0), step(0.1)
    assert any(not torch.equal(plain[k], bonus[k]) for k in plain)  # only the bonus moves them


def test_job_spec_refuses_reward_side_kl_without_reinforce_pp():
    from pydantic import ValidationError

    from rlvr.config import JobSpec

    with pytest.raises(ValidationError, match="kl_mode"):
        JobSpec(algorithm={"kl_mode": "reward", "estimator": "grpo"})
    JobSpec(algorithm={"kl_mode": "reward", "estimator": "reinforce_pp_baseline"})
    with pytest.raises(ValidationError, match="overlong"):
        JobSpec(
            algorithm={"overlong": {"mode": "penalty", "buffer_tokens": 999}},
            rollout={"max_new_tokens": 64},
        )


def test_refill_prompts_are_a_function_of_seed_step_and_round():
    from rlvr.train.loop import _refill_indices, _sampling_seed

    a = _refill_indices(step=3, rnd=1, size=8, n=50, seed=7)
    assert a == _refill_indices(step=3, rnd=1, size=8, n=50, seed=7)
    assert len(set(a)) == 8  # no prompt twice in a round
    assert a != _refill_indices(step=3, rnd=2, size=8, n=50, seed=7)
    assert _sampling_seed(7, 3, 0) == (7 * 1_000_003 + 3) % 2**31  # round 0: the step's seed
    assert _sampling_seed(7, 3, 1) != _sampling_seed(7, 3, 0)
