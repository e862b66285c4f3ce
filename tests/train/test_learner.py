"""The learner (in the driver, or RLlib learner actors): batch layout, logprobs agreeing with the rollout engine, the direction
of an update, exact loss normalisation under micro-batching and data parallelism, and
checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.rollout.base import Completion, SamplingConfig
from rlvr.rollout.hf import HFEngine, HFEngineConfig
from rlvr.train.batch import make_train_batch
from rlvr.train.learner import Learner, LearnerConfig


@pytest.fixture(scope="module")
def engine(random_model_dir):
    return HFEngine(HFEngineConfig(model=str(random_model_dir)))


@pytest.fixture(scope="module")
def rollout(engine):
    tok = engine.tokenizer
    texts = [
        f"<|im_start|>user\nWhat is {i} * 3?<|im_end|>\n<|im_start|>assistant\n" for i in range(4)
    ]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    completions = engine.generate(
        prompts, SamplingConfig(n=4, max_new_tokens=10, temperature=0.8, seed=0)
    )
    return prompts, completions


def _config(model_dir, **kw):
    base = dict(
        model_path=str(model_dir), temperature=0.8, gen_budget=10, lr=1e-3, micro_batch_size=16
    )
    base.update(kw)
    return LearnerConfig(**base)


def _advantages(n):
    return np.array([1.0 if i % 2 == 0 else -1.0 for i in range(n)], dtype=np.float32)


def test_make_train_batch_left_pads_prompts_and_right_pads_responses():
    prompts = [[5, 6, 7], [8]]
    comps = [
        Completion(0, [1, 2], "", [-0.1, -0.2], "stop"),
        Completion(1, [3, 4, 9], "", [-0.3, -0.4, -0.5], "length"),
    ]
    b = make_train_batch(prompts, comps, [0.5, -0.5], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert b["response_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert b["rollout_logprobs"][1].tolist() == pytest.approx([-0.3, -0.4, -0.5])
    assert b["advantages"].tolist() == [0.5, -0.5]


def test_learner_logprobs_match_the_rollout_engine(random_model_dir, rollout):
    prompts, comps = rollout
    learner = Learner(_config(random_model_dir))
    try:
        m = learner.update(make_train_batch(prompts, comps, _advantages(len(comps)), 0), step=1)
    finally:
        learner.shutdown()
    # Same weights, same temperature: the engine's and the learner's logprobs agree.
    assert m["mismatch/kl"] < 1e-6
    assert m["clip_frac"] == 0.0 and m["ratio_mean"] == pytest.approx(1.0)
    assert m["entropy"] > 0 and m["grad_norm"] > 0 and m["lr"] == pytest.approx(1e-3)
    for k in ("loss", "kl", "entropy", "clip_frac", "grad_norm", "lr", "mismatch/kl"):
        assert np.isfinite(m[k])


def _sequence_logprob(engine, prompt, tokens):
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = engine.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / 0.8
    return float(torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).sum())


def test_an_update_raises_positive_advantage_samples_and_lowers_negative_ones(
    random_model_dir, rollout
):
    prompts, comps = rollout
    eng = HFEngine(HFEngineConfig(model=str(random_model_dir)))
    adv = _advantages(len(comps))
    before = [_sequence_logprob(eng, prompts[c.prompt_index], c.token_ids) for c in comps]
    learner = Learner(_config(random_model_dir, lr=3e-3))
    try:
        for step in (1, 2, 3):
            learner.update(make_train_batch(prompts, comps, adv, 0), step=step)
        eng.load_weights(learner.state_dict(), version=3)
    finally:
        learner.shutdown()
    after = [_sequence_logprob(eng, prompts[c.prompt_index], c.token_ids) for c in comps]
    delta = np.array(after) - np.array(before)
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean()


def test_micro_batching_gives_the_same_update_as_one_batch(random_model_dir, rollout):
    prompts, comps = rollout
    batch = make_train_batch(prompts, comps, _advantages(len(comps)), 0)
    # The accumulated gradient (its norm, before clipping) and the loss are those of the whole
    # batch, whatever the micro-batch size and aggregation mode. (Weights are not compared:
    # Adam's first step is ~lr*sign(grad), which amplifies float-rounding differences.)
    for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        results = []
        for mbs in (16, 3):
            learner = Learner(_config(random_model_dir, micro_batch_size=mbs, loss_agg=agg))
            try:
                results.append(learner.update(batch, step=1))
            finally:
                learner.shutdown()
        whole, micro = results
        assert micro["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-5), agg
        assert micro["entropy"] == pytest.approx(whole["entropy"], rel=1e-5), agg


def test_warmup_scales_the_learning_rate(random_model_dir, rollout):
    prompts, comps = rollout
    learner = Learner(_config(random_model_dir, warmup_steps=4))
    try:
        m = learner.update(make_train_batch(prompts, comps, _advantages(len(comps)), 0), step=1)
    finally:
        learner.shutdown()
    assert m["lr"] == pytest.approx(1e-3 / 4)


def test_several_epochs_move_the_policy_and_report_clipping(random_model_dir, rollout):
    prompts, comps = rollout
    learner = Learner(
        _config(random_model_dir, epochs_per_step=4, lr=1e-2, clip_low=0.05, clip_high=0.05)
    )
    try:
        m = learner.update(make_train_batch(prompts, comps, _advantages(len(comps)), 0), step=1)
    finally:
        learner.shutdown()
    assert m["kl"] > 0  # later epochs see a policy that moved away from the batch's
    assert m["clip_frac"] > 0


def test_kl_penalty_uses_the_reference_model(random_model_dir, rollout):
    prompts, comps = rollout
    learner = Learner(
        _config(random_model_dir, ref_model_path=str(random_model_dir), kl_coef=0.5, lr=1e-2)
    )
    try:
        batch = make_train_batch(prompts, comps, _advantages(len(comps)), 0)
        first = learner.update(batch, step=1)
        second = learner.update(batch, step=2)
    finally:
        learner.shutdown()
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference at the start
    assert second["kl"] > 0


def test_checkpoint_holds_an_hf_model_and_the_optimizer(random_model_dir, rollout, tmp_path):
    from transformers import AutoModelForCausalLM

    prompts, comps = rollout
    learner = Learner(_config(random_model_dir))
    try:
        learner.update(make_train_batch(prompts, comps, _advantages(len(comps)), 0), step=1)
        learner.save(tmp_path)
        state = learner.state_dict()
        learner.load_optimizer(tmp_path)
    finally:
        learner.shutdown()
    assert (tmp_path / "optimizer.pt").is_file()
    opt = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    assert opt["state"]  # AdamW moments after one step
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).state_dict()
    for name, value in state.items():
        assert torch.equal(reloaded[name], value), name


@pytest.mark.slow
def test_two_data_parallel_learners_make_the_same_update_as_one(
    ray_cluster, random_model_dir, rollout
):
    prompts, comps = rollout
    batch = make_train_batch(prompts, comps, _advantages(len(comps)), 0)
    results = []
    for n in (0, 2):
        learner = Learner(
            _config(random_model_dir, num_learners=n, num_cpus_per_learner=0, call_timeout_s=300)
        )
        try:
            metrics = learner.update(batch, step=1)
            results.append((metrics, learner.state_dict()))
        finally:
            learner.shutdown()
    (m1, s1), (m2, s2) = results
    # DDP averaged the two shards' gradients into exactly the single learner's gradient.
    assert m2["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-5)
    assert m2["entropy"] == pytest.approx(m1["entropy"], rel=1e-5)
    # ...and both learners stepped: the exported weights moved the same way (to Adam's ~lr).
    base = HFEngine(HFEngineConfig(model=str(random_model_dir))).model.state_dict()
    for name in s1:
        d1, d2 = s1[name] - base[name], s2[name] - base[name]
        assert torch.allclose(d1, d2, atol=2.1e-3), name
    assert any(not torch.equal(s2[n], base[n]) for n in s2)


@pytest.mark.slow
def test_the_learner_in_the_driver_steps_exactly_as_an_rllib_learner_actor(
    ray_cluster, random_model_dir, rollout, tmp_path
):
    """num_learners 0 trains in plain torch (DriverLearner), 1 through RLlib's TorchLearner in
    an actor: the same batches, warmup and two epochs give the same metrics and weights, and
    each one's checkpoint resumes in the other."""
    prompts, comps = rollout
    batch = make_train_batch(prompts, comps, _advantages(len(comps)), 0)
    runs = []
    for n in (0, 1):
        config = _config(
            random_model_dir, num_learners=n, num_cpus_per_learner=0, call_timeout_s=300,
            warmup_steps=2, epochs_per_step=2, clip_low=0.1, clip_high=0.1,
        )  # fmt: skip
        learner = Learner(config)
        try:
            metrics = [learner.update(batch, step=s) for s in (1, 2)]
            learner.save(tmp_path / f"n{n}")
            runs.append((metrics, learner.state_dict()))
        finally:
            learner.shutdown()
    (m_driver, s_driver), (m_actor, s_actor) = runs
    for a, b in zip(m_driver, m_actor, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert s_driver.keys() == s_actor.keys()
    for name in s_driver:
        assert torch.allclose(s_driver[name], s_actor[name], rtol=0, atol=1e-7), name
    saved = [torch.load(tmp_path / f"n{n}" / "optimizer.pt", weights_only=True) for n in (0, 1)]
    assert saved[0]["param_groups"] == saved[1]["param_groups"]
    assert saved[0]["state"].keys() == saved[1]["state"].keys()
    # the driver learner resumes the actor's optimizer state (the checkpoint format is one)
    resumed = Learner(_config(random_model_dir, num_learners=0))
    resumed.load_optimizer(tmp_path / "n1")
    assert resumed._driver is not None and resumed._driver.optimizer.state_dict()["state"]


def test_rows_with_zero_advantage_stay_out_of_the_step_and_change_no_gradient(
    random_model_dir, rollout
):
    prompts, comps = rollout
    # prompts 1 and 3: groups whose rewards were all equal (advantage 0 on each of their rows)
    adv = np.array(
        [
            0.0 if c.prompt_index in (1, 3) else (1.0 if i % 2 else -1.0)
            for i, c in enumerate(comps)
        ],
        dtype=np.float32,
    )
    batch = make_train_batch(prompts, comps, adv, 0)
    results = {}
    for skip in (False, True):
        learner = Learner(_config(random_model_dir, skip_zero_advantage_rows=skip))
        try:
            results[skip] = learner.update(batch, step=1)
        finally:
            learner.shutdown()
    every_row, with_gradient = results[False], results[True]
    assert every_row["learner/skipped_rows"] == 0
    assert with_gradient["learner/skipped_rows"] == int((adv == 0).sum()) == 8
    # the same loss and gradient: still normalised by the whole batch's tokens
    assert with_gradient["grad_norm"] == pytest.approx(every_row["grad_norm"], rel=1e-5)
    assert with_gradient["loss"] == pytest.approx(every_row["loss"], rel=1e-5)
    assert with_gradient["learner/tokens"] < every_row["learner/tokens"]


def test_every_row_is_computed_where_a_zero_advantage_row_has_a_gradient():
    from rlvr.train.update import UpdateConfig, rows_with_gradient

    adv = [0.0, 1.0, 0.0, -1.0]
    assert rows_with_gradient(adv, UpdateConfig()) == [1, 3]
    for hp in (
        UpdateConfig(kl_coef=0.1),  # the KL term's gradient
        UpdateConfig(entropy_coef=0.01),  # the entropy bonus's
        UpdateConfig(kl_mode="reward"),  # token advantages, not these
        UpdateConfig(mini_batches=2),  # the split into mini-batches depends on every row
        UpdateConfig(skip_zero_advantage_rows=False),
    ):
        assert rows_with_gradient(adv, hp) is None, hp
