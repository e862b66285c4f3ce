"""The learner's memory options: micro-batches sized by tokens (same update as one batch,
exact loss normalisation, less padding) and activation checkpointing (layers recomputed in
the backward pass, same gradient, dropout still off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.rollout.base import Completion
from rlvr.train.batch import make_train_batch, plan_micro_batches
from rlvr.train.learner import Learner, LearnerConfig


def _cost(rows, plens, rlens):
    return len(rows) * (max(plens[i] for i in rows) + max(max(rlens[i] for i in rows), 1))


def test_token_budget_packs_rows_longest_first_within_the_budget():
    rng = np.random.default_rng(0)
    plens = rng.integers(3, 40, 50).tolist()
    rlens = rng.integers(0, 60, 50).tolist()
    plan = plan_micro_batches(plens, rlens, max_seqs=4, max_tokens=300)
    assert sorted(i for rows in plan for i in rows) == list(range(50))  # every row once
    assert all(_cost(rows, plens, rlens) <= 300 for rows in plan)
    assert any(len(rows) > 4 for rows in plan)  # max_seqs does not cap a token plan
    totals = [plens[i] + max(rlens[i], 1) for rows in plan for i in rows]
    assert totals == sorted(totals, reverse=True)
    # Greedy: adding the next micro-batch's first row would have broken the budget.
    for rows, nxt in zip(plan, plan[1:], strict=False):
        assert _cost([*rows, nxt[0]], plens, rlens) > 300


def test_a_sequence_longer_than_the_budget_gets_a_micro_batch_of_its_own():
    plan = plan_micro_batches([5, 100, 5], [5, 100, 5], max_seqs=16, max_tokens=50)
    assert plan == [[1], [0, 2]]


def test_without_a_token_budget_micro_batches_are_runs_of_sequences_in_order():
    assert plan_micro_batches([1] * 7, [1] * 7, max_seqs=3) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="max_tokens"):
        plan_micro_batches([1], [1], max_seqs=3, max_tokens=0)


@pytest.fixture(scope="module")
def ragged_batch():
    """12 sequences with prompts of 3-25 tokens and responses of 1-12 (a real batch's mix)."""
    rng = np.random.default_rng(1)
    prompts = [rng.integers(7, 60, int(n)).tolist() for n in rng.integers(3, 26, 6)]
    comps = []
    for i in range(12):
        n = int(rng.integers(1, 13))
        tokens = rng.integers(7, 60, n).tolist()
        comps.append(Completion(i // 2, tokens, "", (-rng.random(n) * 3).tolist(), "stop"))
    adv = np.array([1.0, -1.0, 0.5, -0.2, 2.0, -0.7] * 2, dtype=np.float32)  # loss != 0
    return make_train_batch(prompts, comps, adv, pad_id=0)


def _update(model_dir, batch, **kw):
    base = dict(model_path=str(model_dir), temperature=0.8, gen_budget=12, lr=1e-3)
    learner = Learner(LearnerConfig(**{**base, **kw}))
    try:
        return learner.update(batch, step=1)
    finally:
        learner.shutdown()


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_token_sized_micro_batches_give_the_same_update_as_one_batch(
    random_model_dir, ragged_batch, agg
):
    whole = _update(random_model_dir, ragged_batch, micro_batch_size=64, loss_agg=agg)
    packed = _update(
        random_model_dir, ragged_batch, micro_batch_size=64, micro_batch_tokens=60, loss_agg=agg
    )
    # The accumulated gradient (pre-clip norm), the loss and every statistic are the whole
    # batch's, though rows were reordered, regrouped and trimmed to each group's lengths.
    for k in ("grad_norm", "loss", "entropy", "mismatch/kl"):
        assert packed[k] == pytest.approx(whole[k], rel=1e-5, abs=1e-9), (agg, k)
    assert packed["learner/tokens"] == whole["learner/tokens"]  # the same real tokens...
    assert packed["learner/pad_frac"] < whole["learner/pad_frac"]  # ...with less padding


def test_micro_batch_tokens_comes_from_the_job_spec(random_model_dir):
    from rlvr.config import JobSpec

    spec = JobSpec.model_validate({"algorithm": {"micro_batch_tokens": 4096}})
    assert LearnerConfig.from_spec(spec, str(random_model_dir)).micro_batch_tokens == 4096
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        JobSpec.model_validate({"algorithm": {"micro_batch_tokens": 0}})


def _layer_calls(model) -> list[int]:
    # A pre-hook: a recompute may stop early, once the tensors backward needs exist again.
    calls = [0]
    model.model.layers[0].mlp.register_forward_pre_hook(
        lambda *a: calls.__setitem__(0, calls[0] + 1)
    )
    return calls


def test_activation_checkpointing_recomputes_layers_in_backward_with_dropout_off(
    random_model_dir,
):
    from transformers import AutoModelForCausalLM

    from rlvr.models.causal_lm import enable_activation_checkpointing, set_train_modes

    ids = torch.tensor([[3, 9, 12, 15, 20, 8]])
    results = []
    for checkpointing in (False, True):
        # attention dropout 0.5 in the config: the learner must not apply it.
        lm = AutoModelForCausalLM.from_pretrained(random_model_dir, attention_dropout=0.5)
        if checkpointing:
            enable_activation_checkpointing(lm)
        set_train_modes(lm)
        calls = _layer_calls(lm)
        logits = lm(input_ids=ids, use_cache=False).logits
        again = lm(input_ids=ids, use_cache=False).logits
        assert torch.equal(logits, again)  # no dropout
        calls[0] = 0
        lm(input_ids=ids, use_cache=False).logits.logsumexp(-1).sum().backward()
        grad = lm.model.layers[0].self_attn.q_proj.weight.grad.clone()
        results.append((calls[0], logits, grad))
    (plain_calls, plain_logits, plain_grad), (ckpt_calls, ckpt_logits, ckpt_grad) = results
    assert plain_calls == 1 and ckpt_calls == 2  # the layer ran again in the backward pass
    assert torch.allclose(ckpt_logits, plain_logits, atol=1e-6)
    assert torch.allclose(ckpt_grad, plain_grad, rtol=1e-5, atol=1e-7)


def test_learner_with_activation_checkpointing_makes_the_same_update(
    random_model_dir, ragged_batch
):
    plain = _update(random_model_dir, ragged_batch)
    ckpt = _update(random_model_dir, ragged_batch, gradient_checkpointing=True)
    assert ckpt["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-5)
    assert ckpt["entropy"] == pytest.approx(plain["entropy"], rel=1e-5)
