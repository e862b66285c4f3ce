"""Tool output inside a response is context, not an action: masked out of the loss, the
ratio, the KL and the token statistics, so no masked token can change the gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.models.causal_lm import PolicyModel
from rlvr.rollout.base import Completion
from rlvr.train.batch import make_train_batch, micro_batch, row_lengths
from rlvr.train.update import UpdateConfig, gradient_step

HP = dict(micro_batch_size=2, gen_budget=16, kl_coef=0.1, clip_low=0.2, clip_high=0.2)
ADV = np.array([1.0, -0.5, 0.8, -1.2], dtype=np.float32)


def _completions(rng, tool_ids=None, tool_lp=None):
    """Responses: model tokens, a 3-token tool output, model tokens, a trailing tool output
    of 2 tokens (a call whose output used up the budget)."""
    comps = []
    for i in range(4):
        model1, model2 = rng.integers(7, 60, 4).tolist(), rng.integers(7, 60, 3).tolist()
        mid = [20, 21, 22]
        tail = list(tool_ids[i]) if tool_ids is not None else [30, 31]
        tokens = model1 + mid + model2 + tail
        mask = [True] * 4 + [False] * 3 + [True] * 3 + [False] * 2
        lp = (-rng.random(len(tokens)) * 2).tolist()
        for j, m in enumerate(mask):
            if not m:
                lp[j] = 0.0 if tool_lp is None else tool_lp
        comps.append(Completion(i // 2, tokens, "", lp, "length", model_mask=mask))
    return comps


def _batch(**kw):
    rng = np.random.default_rng(5)
    prompts = [rng.integers(7, 60, 6).tolist(), rng.integers(7, 60, 9).tolist()]
    return make_train_batch(prompts, _completions(rng, **kw), ADV, pad_id=0)


def _grads(model_dir, batch):
    torch.manual_seed(0)
    model = PolicyModel(str(model_dir), temperature=1.0)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
    stats = gradient_step(model, optimizer, tensors, UpdateConfig(**HP))
    after = model.lm.state_dict()
    return {k: before[k] - after[k] for k in before}, stats.metrics()


def test_the_batch_masks_tool_tokens_but_attends_to_them():
    b = _batch()
    assert b["response_mask"][0].tolist() == [1] * 4 + [0] * 3 + [1] * 3 + [0] * 2
    assert b["attention_mask"][0, -12:].tolist() == [1] * 12
    # micro-batches are trimmed by the attention mask: a trailing tool output is kept
    assert row_lengths({k: torch.as_tensor(v) for k, v in b.items()})[1] == [12] * 4
    m = micro_batch({k: torch.as_tensor(v) for k, v in b.items()}, [0, 1])
    assert m["response_mask"].shape[1] == 12


def test_a_mask_of_the_wrong_length_is_refused():
    c = Completion(0, [1, 2], "", [0.0, 0.0], "stop", model_mask=[True])
    with pytest.raises(ValueError, match="2 tokens but 1 mask"):
        make_train_batch([[5]], [c], [1.0], pad_id=0)


def test_masked_tokens_cannot_change_the_gradient(random_model_dir):
    base, m_base = _grads(random_model_dir, _batch())
    # arbitrary token ids in the trailing tool output and absurd rollout logprobs at every
    # tool position: neither is an action, so the update is bit-for-bit the same
    changed, m_changed = _grads(
        random_model_dir, _batch(tool_ids=[[40, 41], [55, 3], [9, 9], [12, 50]], tool_lp=-50.0)
    )
    assert all(torch.equal(base[k], changed[k]) for k in base)
    assert m_base["grad_norm"] == m_changed["grad_norm"]
    assert m_base["kl"] == m_changed["kl"] and m_base["ratio_mean"] == m_changed["ratio_mean"]
    assert m_base["grad_norm"] > 0


def test_unmasked_the_same_tokens_would_change_it(random_model_dir):
    """The control: counted as actions, the changed tokens do move the gradient."""
    base, _ = _grads(random_model_dir, _batch())
    unmasked = _batch(tool_ids=[[40, 41], [55, 3], [9, 9], [12, 50]])
    unmasked["response_mask"] = (unmasked["attention_mask"][:, -12:] > 0).astype(np.float32)
    changed, _ = _grads(random_model_dir, unmasked)
    assert any(not torch.equal(base[k], changed[k]) for k in base)


def test_tool_metrics_of_a_step():
    from rlvr.train.loop import _tool_metrics

    def c(calls, errors, turns, time_s, forged=0):
        return Completion(0, [1], "", [0.0], "stop", tool_calls=calls, tool_errors=errors,
                          turns=turns, tool_time_s=time_s, forged_outputs=forged)  # fmt: skip

    m = _tool_metrics([c(2, 1, 3, 0.5), c(0, 0, 1, 0.0, forged=2), c(2, 0, 2, 0.25)])
    assert m == {
        "tools/calls_mean": pytest.approx(4 / 3),
        "tools/error_frac": 0.25,
        "tools/time_s": 0.75,
        "tools/turns_mean": 2.0,
        "tools/forged_mean": pytest.approx(2 / 3),
    }
    assert _tool_metrics([c(0, 0, 1, 0.0)])["tools/error_frac"] == 0.0
