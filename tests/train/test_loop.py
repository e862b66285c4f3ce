"""The training loop on a real local Ray cluster (random tiny model, so fast): every
metric every step, samples, checkpoints, resume with each step written once, cancel."""

from __future__ import annotations

import json
import shutil

import pytest

from rlvr.config import JobSpec
from rlvr.train import run
from rlvr.train.checkpoint import list_checkpoints
from rlvr.train.rundir import read_jsonl

DESIGN_METRICS = [
    "reward/mean", "reward/std", "reward/math/mean", "reward/think_format/mean", "accuracy",
    "response/length_mean", "response/length_max", "think/length_mean", "think/format_ok",
    "loss", "kl", "entropy", "clip_frac", "grad_norm", "lr", "mismatch/kl",
    "time/rollout_s", "time/reward_s", "time/learn_s", "time/sync_s", "throughput/rollout_tok_s",
    "async/staleness_mean", "async/rollout_wait_s", "async/learner_wait_s",
]  # fmt: skip


class RecordingSink:
    def __init__(self):
        self.metric_steps, self.sample_steps, self.checkpoints, self.statuses, self.truncations = (
            [],
            [],
            [],
            [],
            [],
        )

    def metrics(self, step, values):
        self.metric_steps.append((step, dict(values)))

    def samples(self, step, rows):
        self.sample_steps.append((step, rows))

    def checkpoint(self, step, path):
        self.checkpoints.append((step, path))

    def status(self, status, *, step=None, error=None):
        self.statuses.append((status, step, error))

    def truncate_after(self, step):
        self.truncations.append(step)


def _spec(model_dir, **algorithm):
    return JobSpec.model_validate(
        {
            "name": "loop-test",
            "model": {"path": str(model_dir)},
            "data": {
                "train": "builtin:arithmetic?n=40",
                "eval": "builtin:arithmetic?n=8&seed=1&split=test",
            },
            "reward": {
                "verifiers": [{"name": "math"}, {"name": "think_format", "weight": 0.1}],
                "workers": 1,
            },
            "algorithm": {
                "group_size": 4,
                "prompts_per_step": 3,
                "lr": 1e-3,
                "max_steps": 3,
                **algorithm,
            },
            "rollout": {"max_new_tokens": 16, "temperature": 1.0},
            "checkpoint": {"every": 2, "keep": 3},
            "eval": {"every": 2},
        }
    )


@pytest.fixture(scope="module")
def first_run(ray_cluster, random_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    sink = RecordingSink()
    seen = []
    spec = _spec(random_model_dir)
    spec.logging.tensorboard = True  # a tracker beside the run dir and the caller's sink
    summary = run(
        spec,
        run_dir,
        sink=sink,
        actor_cpus=0,
        progress=lambda s, m: seen.append(s),
    )
    return run_dir, sink, summary, seen


def test_every_design_metric_is_written_every_step(first_run):
    run_dir, sink, summary, seen = first_run
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    for rec in records[1:]:
        missing = [k for k in DESIGN_METRICS if k not in rec]
        assert not missing, f"step {rec['step']} lacks {missing}"
    evals = [r["step"] for r in records if "eval/accuracy" in r]
    assert evals == [0, 2, 3]  # at start, every 2 steps, and at the end
    assert [r["async/staleness_mean"] for r in records[1:]] == [0.0, 0.0, 0.0]  # synchronous
    assert [s for s, _ in sink.metric_steps] == [0, 1, 2, 3]  # the caller's sink gets the same
    assert sink.metric_steps[2][1]["reward/mean"] == records[2]["reward/mean"]
    assert seen == [0, 1, 2, 3]
    assert summary.status == "succeeded" and summary.step == 3
    assert sink.statuses[0][0] == "running" and sink.statuses[-1][:2] == ("succeeded", 3)


def test_every_learner_metric_reaches_metrics_jsonl_and_the_callers_sink(first_run):
    from rlvr.train.update import LEARNER_METRICS

    run_dir, sink, _, _ = first_run
    assert "learner/skipped_steps" in LEARNER_METRICS  # a skipped step must be visible
    records = read_jsonl(run_dir / "metrics.jsonl")
    for rec, (step, sent) in zip(records[1:], sink.metric_steps[1:], strict=True):
        assert [k for k in LEARNER_METRICS if k not in rec] == [], step
        assert [k for k in LEARNER_METRICS if k not in sent] == [], step
        assert rec["learner/skipped_steps"] == 0.0


def test_every_metric_the_dashboard_charts_is_one_the_loop_writes(first_run):
    import re
    from pathlib import Path

    import rlvr.api

    app_js = (Path(rlvr.api.__file__).parent / "static" / "app.js").read_text()
    charts = app_js[app_js.index("const CHARTS") :].split("];")[0]
    lines = " ".join(re.findall(r"lines: \[([^\]]*)\]", charts))
    charted = set(re.findall(r'"([^"]+)"', lines))
    assert {"loss", "grad_norm", "learner/skipped_steps"} <= charted
    written = set(read_jsonl(first_run[0] / "metrics.jsonl")[-1])  # the last step has eval too
    assert sorted(charted - written) == []


def test_samples_checkpoints_spec_and_curves_are_in_the_run_dir(first_run):
    from transformers import AutoModelForCausalLM

    run_dir, sink, _, _ = first_run
    rows = read_jsonl(run_dir / "samples.jsonl")
    assert {r["step"] for r in rows} == {1, 2, 3}
    row = rows[0]
    assert {
        "prompt",
        "completion",
        "think",
        "answer",
        "reference",
        "reward",
        "passed",
        "verdicts",
    } <= set(row)
    assert set(row["verdicts"]) == {"math", "think_format"}
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 3]
    assert [s for s, _ in sink.checkpoints] == [2, 3]
    ckpt = list_checkpoints(run_dir)[-1][1]
    assert AutoModelForCausalLM.from_pretrained(ckpt) is not None
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "tokenizer.json").is_file()
    assert json.loads((ckpt / "trainer_state.json").read_text())["data_position"] == 3 * 3
    assert json.loads((run_dir / "spec.json").read_text())["name"] == "loop-test"
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_redoes_lost_steps_exactly_once_and_identically(
    first_run, random_model_dir, tmp_path
):
    run_dir, _, _, _ = first_run
    resumed = tmp_path / "run"
    shutil.copytree(run_dir, resumed)
    # The first attempt was "killed" after writing step 3's metrics but before its checkpoint.
    shutil.rmtree(resumed / "checkpoints" / "step_3")
    sink = RecordingSink()
    summary = run(
        _spec(random_model_dir, max_steps=4), resumed, sink=sink, resume=True, actor_cpus=0
    )
    assert sink.truncations == [2]
    records = read_jsonl(resumed / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert summary.status == "succeeded" and summary.step == 4
    # Same seed, same weights, same prompts: step 3 again samples what it did the first time.
    original = read_jsonl(run_dir / "metrics.jsonl")[3]
    for key in ("reward/mean", "response/length_mean", "entropy", "grad_norm"):
        assert records[3][key] == pytest.approx(original[key], rel=1e-4), key


def test_should_stop_cancels_and_checkpoints_the_last_step(ray_cluster, random_model_dir, tmp_path):
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    summary = run(
        _spec(random_model_dir, max_steps=5), tmp_path, should_stop=stop_after_two, actor_cpus=0
    )
    assert summary.status == "cancelled" and summary.step == 2
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "cancelled"


def test_a_cancelled_run_writes_the_eval_still_running_beside_it(
    ray_cluster, random_model_dir, tmp_path
):
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    spec = _spec(random_model_dir, max_steps=5)
    spec.eval.every, spec.checkpoint.every = 1, 10  # step 2's eval runs beside step 3's start
    summary = run(spec, tmp_path, should_stop=stop_after_two, actor_cpus=0)
    assert summary.status == "cancelled" and summary.step == 2
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "eval/accuracy" in r] == [0, 1, 2]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert summary.final_eval_accuracy == records[-1]["eval/accuracy"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]


NO_RAY_CHILD = """
import json, sys
import psutil, ray
from rlvr.config import JobSpec
from rlvr.train import run

seen = []

def progress(step, metrics):
    kids = [p.name() for p in psutil.Process().children(recursive=True)]
    seen.append((ray.is_initialized(), kids))

summary = run(JobSpec.model_validate_json(sys.argv[1]), sys.argv[2], progress=progress)
print(json.dumps({"status": summary.status, "seen": seen}))
"""


def test_a_run_that_places_no_actor_starts_no_ray_and_learns_what_it_learns_on_ray(
    first_run, random_model_dir, tmp_path
):
    """The first run trained under a Ray cluster with its engine and learner in the driver;
    the same spec in a fresh process with no cluster around starts none (its plan places no
    actor) and gets every step's numbers exactly."""
    import os
    import subprocess
    import sys

    run_dir, _, _, _ = first_run
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    spec = _spec(random_model_dir).model_dump_json()
    out = subprocess.run(
        [sys.executable, "-c", NO_RAY_CHILD, spec, str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and len(result["seen"]) == 4  # steps 0..3
    for ray_up, children in result["seen"]:
        assert not ray_up
        assert not {"raylet", "gcs_server"} & set(children), children
    mine = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    theirs = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [0, 1, 2, 3]
    for a, b in zip(theirs, mine, strict=True):
        for key in ("eval/accuracy", "reward/mean", "response/length_mean", "loss", "grad_norm"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (a["step"], key)


def test_an_eval_beside_the_next_step_reports_what_an_eval_between_steps_does(
    ray_cluster, random_model_dir, tmp_path, monkeypatch, rollouts_at_eval_start
):
    """Where the engine works beside the learner (here on its own thread in the driver) an
    eval runs while the next step learns: its generations queue behind that step's rollout
    and ahead of the next weight push, so it evaluates the same weights, and every number
    matches a run whose evals stand between the steps (the last step's eval, and a
    checkpoint step's, are always waited for)."""
    from rlvr.plan import Plan

    spec = _spec(random_model_dir, max_steps=4)
    spec.eval.every, spec.checkpoint.every = 1, 3
    queued = rollouts_at_eval_start
    run(spec, tmp_path / "beside", actor_cpus=0)
    beside, queued[:] = list(queued), []
    monkeypatch.setattr(Plan, "engines_work_beside_learner", property(lambda self: False))
    run(spec, tmp_path / "between", actor_cpus=0)
    # steps 0, 1, 2: behind the next step's rollout; 3 (a checkpoint) and 4 (the last): alone
    assert beside == [[1], [2], [3], [], []]
    assert queued == [[], [], [], [], []]
    a = read_jsonl(tmp_path / "beside" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "between" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert "eval/accuracy" in x and "time/eval_wait_s" in x, x["step"]
        for key in ("eval/accuracy", "eval/reward_mean", "reward/mean", "loss", "grad_norm"):
            if key in y:
                assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-9), (x["step"], key)
    assert [s for s, _ in list_checkpoints(tmp_path / "beside")] == [3, 4]


def test_a_run_dir_holding_a_run_needs_resume(first_run, random_model_dir):
    run_dir, _, _, _ = first_run
    with pytest.raises(ValueError, match="resume"):
        run(_spec(random_model_dir), run_dir, actor_cpus=0)


def test_an_unknown_verifier_fails_naming_the_field(ray_cluster, random_model_dir, tmp_path):
    spec = _spec(random_model_dir)
    spec.reward.verifiers[0].name = "no_such_verifier"
    sink = RecordingSink()
    with pytest.raises(ValueError, match=r"reward\.verifiers\[0\]"):
        run(spec, tmp_path, sink=sink, actor_cpus=0)
    assert sink.statuses[-1][0] == "failed" and "no_such_verifier" in sink.statuses[-1][2]


def test_the_loop_reports_to_the_trackers_the_spec_turns_on(first_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _, _ = first_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    rewards = {e.step: e.value for e in events.Scalars("reward/mean")}
    written = {r["step"]: r["reward/mean"] for r in read_jsonl(run_dir / "metrics.jsonl")[1:]}
    assert rewards == pytest.approx(written)


def test_think_stats_count_the_think_blocks_sampled_tokens_and_the_answers_after_them(
    random_model_dir,
):
    from rlvr.rollout.base import Completion
    from rlvr.rollout.hf import load_tokenizer
    from rlvr.train.loop import _think_marker_ids, _think_stats

    tok = load_tokenizer(str(random_model_dir))
    marks = _think_marker_ids(tok)
    open_id, close_id = marks
    assert open_id is not None and close_id is not None  # one token each in this tokenizer

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    def sampled(text: str, ids: list[int] | None = None, **kw) -> Completion:
        ids = encode(text) if ids is None else ids
        return Completion(0, ids, text, [0.0] * len(ids), "stop", **kw)

    texts = [
        "<think>1+2=3</think><answer>3</answer>",  # think and an answer
        "<think>7 + 8 is 15, so</think>",  # think, no answer after it
        "no think block at all",
    ]
    expected = (len(encode("1+2=3")) + len(encode("7 + 8 is 15, so"))) / 2
    stats = _think_stats([sampled(t) for t in texts], tok, marks)
    assert stats == (pytest.approx(expected), pytest.approx(1 / 3))
    assert _think_stats([sampled("plain")], tok, marks) == (0.0, 0.0)
    # the sampled ids are counted, not a tokenization of the text: here the model took
    # twice as many tokens as the tokenizer would for the same text
    twice = [open_id, *encode("1+2=3"), *encode("1+2=3"), close_id]
    text = "<think>1+2=3</think>"
    assert _think_stats([sampled(text, twice)], tok, marks)[0] == 2 * len(encode("1+2=3"))
    # a template's prefill opened the block: counted from the first token
    prefilled = "1+2=3</think><answer>3</answer>"
    assert _think_stats([sampled(prefilled)], tok, marks)[0] == len(encode("1+2=3"))
    # where the ids cannot say (the model spelled </think> in pieces; tool turns), the
    # think text is tokenized
    pieces = [open_id, *encode("1+2=3"), *encode("</thi"), *encode("nk>")]
    assert _think_stats([sampled(text, pieces)], tok, marks)[0] == len(encode("1+2=3"))
    tools = sampled(text, twice, model_mask=[True] * len(twice))
    assert _think_stats([tools], tok, marks)[0] == len(encode("1+2=3"))


def test_the_next_rollout_starts_before_a_steps_row_is_written_unless_an_eval_or_checkpoint_is_due(
    ray_cluster, random_model_dir, tmp_path, monkeypatch
):
    from rlvr.train import pipeline

    events: list[str] = []
    start = pipeline.RolloutQueue.start

    def spy(self, step, *args, **kwargs):
        events.append(f"start {step}")
        return start(self, step, *args, **kwargs)

    class Sink(RecordingSink):
        def metrics(self, step, values):
            events.append(f"row {step}")

    monkeypatch.setattr(pipeline.RolloutQueue, "start", spy)
    spec = _spec(random_model_dir, max_steps=5)
    spec.eval.every, spec.eval.at_start, spec.checkpoint.every = 2, False, 4
    run(spec, tmp_path, sink=Sink(), actor_cpus=0)
    assert events == [
        "start 1",
        "start 2",  # right after step 1's push
        "row 1",
        "start 3",  # step 2's eval: step 3's rollout ahead of it, step 2's row after it
        "start 4",
        "row 2",
        "row 3",
        "row 4",  # a checkpoint (and an eval) at step 4: step 5's rollout after them
        "start 5",
        "row 5",
    ]


def test_a_cancelled_run_keeps_the_rollout_it_started_and_resumes_exactly(
    ray_cluster, random_model_dir, tmp_path
):
    """Step 2's rollout starts as soon as step 1's weights are pushed; cancelled then, the
    checkpoint of step 1 stores it, and the resumed run learns from it what an uninterrupted
    run learns."""
    spec = _spec(random_model_dir, max_steps=3)
    spec.checkpoint.every = 10
    whole = run(spec, tmp_path / "whole", actor_cpus=0)
    calls = []
    cut = run(spec, tmp_path / "cut", should_stop=lambda: calls.append(1) or len(calls) > 1,
              actor_cpus=0)  # fmt: skip
    assert (whole.status, cut.status, cut.step) == ("succeeded", "cancelled", 1)
    state = json.loads(
        (tmp_path / "cut" / "checkpoints" / "step_1" / "trainer_state.json").read_text()
    )
    assert [p["step"] for p in state["pending_rollouts"]] == [2]
    resumed = run(spec, tmp_path / "cut", resume=True, actor_cpus=0)
    assert resumed.status == "succeeded" and resumed.step == 3
    a = {r["step"]: r for r in read_jsonl(tmp_path / "whole" / "metrics.jsonl")}
    b = {r["step"]: r for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")}
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for step in (2, 3):
        for key in ("reward/mean", "response/length_mean", "loss", "grad_norm", "entropy"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-9), (step, key)
