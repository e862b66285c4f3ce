"""Evaluation: named eval sets, pass@k (Chen et al., 2021), maj@k, per-prompt pass rates.

Per set ``s`` (``eval.sets``, or ``data.eval`` alone): ``eval/s/pass@1`` (greedy when
``eval.samples`` is 1, else the mean over the samples), ``eval/s/pass@k`` and
``eval/s/maj@k`` for each ``k`` in ``eval.k`` with ``1 < k <= samples``, and
``eval/s/length_mean`` (completion tokens). ``eval/accuracy`` and ``eval/reward_mean`` are
the first set's greedy pass@1 and mean reward, as before, so curves stay comparable.

The metric functions are pure (numbers in, numbers out); :func:`evaluate_sets` runs the
generation and scoring callables it is given (the trainer's engines and reward pool, or
the ones ``rlvr eval`` starts). Formulas: ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlvr.rollout.base import SamplingConfig


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from ``n`` samples of which ``c`` passed:
    ``1 - C(n-c, k) / C(n, k)``, the chance that k of the n drawn without replacement hold
    at least one pass (Chen et al., 2021), computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool], k: int) -> float:
    """The expected correctness of a majority vote over ``k`` of the ``n`` samples, averaged
    over all ``C(n, k)`` subsets. The most common answer among the k wins (``None``: no
    answer, never votes; no votes at all scores 0); a tie between t answers gives each 1/t
    of the vote. An answer's correctness is the pass rate of all its samples."""
    n = len(answers)
    if len(correct) != n or not 1 <= k <= n:
        raise ValueError(f"need len(correct) == len(answers) = n and 1 <= k <= n, got k={k}")
    counts = Counter(a for a in answers if a is not None)
    passed = Counter(a for a, ok in zip(answers, correct, strict=True) if a is not None and ok)
    quality = {a: passed[a] / c for a, c in counts.items()}
    silent = n - sum(counts.values())
    if k == n:  # one subset: the vote over all the samples
        top = max(counts.values(), default=0)
        winners = [a for a, c in counts.items() if c == top]
        return sum(quality[a] for a in winners) / len(winners) if winners else 0.0
    total = 0.0
    for answer, c_win in counts.items():
        if not quality[answer]:
            continue
        others = [c for a, c in counts.items() if a != answer]
        for v in range(1, min(c_win, k) + 1):
            # ways[s][t]: the others pick s samples in all, t answers of them exactly v each
            # (so t <= (k - v) // v: the table stays small however many answers there are)
            ties = (k - v) // v + 1
            ways = [[0] * ties for _ in range(k - v + 1)]
            ways[0][0] = 1
            for c in others:
                new = [[0] * ties for _ in range(k - v + 1)]
                for s in range(k - v + 1):
                    for t in range(ties):
                        if ways[s][t]:
                            for x in range(min(c, v, k - v - s) + 1):
                                new[s + x][t + (x == v)] += ways[s][t] * math.comb(c, x)
                ways = new
            tally = sum(
                ways[s][t] * math.comb(silent, k - v - s) / (t + 1)
                for s in range(k - v + 1)
                for t in range(ties)
                if ways[s][t]
            )
            total += quality[answer] * math.comb(c_win, v) * tally
    return total / math.comb(n, k)


def answer_key(verdict: Any) -> str | None:
    """The normalised answer a verdict read (what maj@k votes on): math's ``extracted``,
    countdown's ``expression``; ``None`` when the verifier reads no single answer (code)."""
    details = getattr(verdict, "details", None) or {}
    for key in ("extracted", "expression"):
        value = details.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return None


def set_name(source: str) -> str:
    """A metric-safe name for a source: ``builtin:arithmetic?n=200`` -> ``arithmetic``,
    ``data/gsm8k_test.jsonl`` -> ``gsm8k_test``."""
    base = source.split("?", 1)[0].removeprefix("builtin:").rsplit("/", 1)[-1]
    base = re.sub(r"\.(jsonl|json|parquet)$", "", base)
    return re.sub(r"[^A-Za-z0-9._-]", "_", base).strip("._-")[:32] or "eval"


def eval_sets(spec: Any) -> dict[str, str]:
    """The job's eval sets in order: ``eval.sets``, else ``data.eval`` named after its source."""
    if spec.eval.sets:
        return dict(spec.eval.sets)
    return {set_name(spec.data.eval): spec.data.eval} if spec.data.eval else {}


@dataclass
class SetScores:
    """One set's completions, grouped per prompt: what the metrics are computed from."""

    name: str
    passed: list[list[bool]] = field(default_factory=list)
    answers: list[list[str | None]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def metrics(self, ks: Sequence[int]) -> dict[str, float]:
        n = len(self.passed[0]) if self.passed else 0
        prefix = f"eval/{self.name}"
        out = {
            f"{prefix}/pass@1": float(np.mean([np.mean(p) for p in self.passed])),
            f"{prefix}/length_mean": float(np.mean(self.lengths)) if self.lengths else 0.0,
            f"{prefix}/reward_mean": float(np.mean(self.rewards)) if self.rewards else 0.0,
        }
        voted = any(a is not None for answers in self.answers for a in answers)
        for k in sorted(set(ks)):
            if not 1 < k <= n:
                continue
            out[f"{prefix}/pass@{k}"] = float(
                np.mean([pass_at_k(n, sum(p), k) for p in self.passed])
            )
            if voted:
                out[f"{prefix}/maj@{k}"] = float(
                    np.mean(
                        [maj_at_k(a, p, k) for a, p in zip(self.answers, self.passed, strict=True)]
                    )
                )
        return out


def score_set(
    name: str, n_prompts: int, completions: Sequence[Any], rewards: Sequence[Any]
) -> SetScores:
    """Group completions (``.prompt_index``, ``.token_ids``) and their rewards per prompt."""
    scores = SetScores(name)
    scores.passed = [[] for _ in range(n_prompts)]
    scores.answers = [[] for _ in range(n_prompts)]
    for c, r in zip(completions, rewards, strict=True):
        first = next(iter(r.verdicts.values()), None)
        scores.passed[c.prompt_index].append(bool(r.passed))
        scores.answers[c.prompt_index].append(answer_key(first))
        scores.lengths.append(len(c.token_ids))
        scores.rewards.append(float(r.total))
    return scores


Generate = Callable[[list[list[int]], SamplingConfig], list[Any]]
Score = Callable[[list[str], list[Any]], list[Any]]


@dataclass(frozen=True)
class EvalRequest:
    """One generation an eval makes: ``set_name``'s prompts under ``sampling``.
    ``greedy_accuracy`` marks the first set's extra greedy pass (``eval/accuracy``) when
    ``eval.samples > 1``."""

    set_name: str
    sampling: SamplingConfig
    greedy_accuracy: bool = False


def eval_requests(sets: dict[str, Any], spec: Any) -> list[EvalRequest]:
    """The generations an eval of ``sets`` makes, in order: per set ``eval.samples``
    completions per prompt (greedy when 1, else at ``eval.temperature``), and for the first
    set one more greedy pass when ``samples > 1``. All of them can be submitted at once: the
    trainer starts an eval on the engines and learns on while they work (loop.py)."""
    e = spec.eval

    def sampling(n: int, temperature: float) -> SamplingConfig:
        return SamplingConfig(
            n=n,
            max_new_tokens=e.max_new_tokens or spec.rollout.max_new_tokens,
            temperature=temperature,
            top_p=spec.rollout.top_p if temperature else 1.0,
            stop=list(spec.rollout.stop),
            seed=spec.algorithm.seed,
        )

    greedy = e.samples == 1
    out = []
    for i, name in enumerate(sets):
        out.append(EvalRequest(name, sampling(e.samples, 0.0 if greedy else e.temperature)))
        if i == 0 and not greedy:
            out.append(EvalRequest(name, sampling(1, 0.0), greedy_accuracy=True))
    return out


def score_completions(
    prompts: Any, completions: list[Any], score: Score
) -> tuple[list[Any], list[Any]]:
    """``(completions, rewards)`` of one request: each completion scored against the record
    of its prompt (``prompts``: ``.records`` by ``prompt_index``)."""
    records = [prompts.records[c.prompt_index] for c in completions]
    return completions, score([c.text for c in completions], records)


def eval_metrics(
    sets: dict[str, Any],
    spec: Any,
    requests: Sequence[EvalRequest],
    outputs: Sequence[tuple[list[Any], list[Any]]],
) -> tuple[dict[str, float], dict[str, SetScores]]:
    """The metrics of an eval from each request's ``(completions, rewards)``, first set first
    (``eval/accuracy`` and ``eval/reward_mean``: the first set's greedy pass)."""
    metrics: dict[str, float] = {}
    results: dict[str, SetScores] = {}
    first = next(iter(sets), None)
    for request, (completions, rewards) in zip(requests, outputs, strict=True):
        name = request.set_name
        if not request.greedy_accuracy:
            results[name] = score_set(name, len(sets[name].records), completions, rewards)
            metrics.update(results[name].metrics(spec.eval.k))
        if name == first and (request.greedy_accuracy or spec.eval.samples == 1):
            metrics["eval/accuracy"] = float(np.mean([r.passed for r in rewards]))
            metrics["eval/reward_mean"] = float(np.mean([r.total for r in rewards]))
    return metrics, results


def evaluate_sets(
    sets: dict[str, Any],
    generate: Generate,
    score: Score,
    spec: Any,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[str, float], dict[str, SetScores]]:
    """Metrics of every set (``{name: prompts with .records and .token_ids}``), first first.

    ``generate`` and ``score`` are the engines' and the reward pool's; ``spec`` the job
    spec (``eval`` and ``rollout``). Greedy when ``eval.samples`` is 1; otherwise
    ``samples`` completions per prompt at ``eval.temperature``, plus one greedy pass over
    the first set for ``eval/accuracy``. ``progress(set name, index, number of sets)``.
    """
    requests = eval_requests(sets, spec)
    outputs = []
    for request in requests:
        if progress and not request.greedy_accuracy:
            progress(request.set_name, list(sets).index(request.set_name), len(sets))
        prompts = sets[request.set_name]
        completions = generate(prompts.token_ids, request.sampling)
        outputs.append(score_completions(prompts, completions, score))
    return eval_metrics(sets, spec, requests, outputs)


# -- eval-only runs: a model, a checkpoint, or every checkpoint of a run ------------------------
@dataclass
class EvalTarget:
    """One model to evaluate: ``label`` for tables, ``model`` for :func:`resolve_model`,
    ``step`` when it is a checkpoint of a run (0: the run's base model)."""

    label: str
    model: str
    step: int | None = None


def eval_targets(target: str) -> list[EvalTarget]:
    """``target`` as models to evaluate: a run directory (``checkpoints/`` inside) gives its
    base model (step 0, when its ``spec.json`` names one) and every checkpoint, oldest first
    (an eval-vs-step curve); anything else (``tiny:arithmetic``, a model or checkpoint
    directory, an HF id) is one model."""
    import json
    from pathlib import Path

    from rlvr.train.checkpoint import list_checkpoints

    root = Path(target).expanduser()
    checkpoints = list_checkpoints(root) if root.is_dir() else []
    if not checkpoints:
        return [EvalTarget(target, target)]
    out = []
    spec_file = root / "spec.json"
    if spec_file.is_file():
        base = json.loads(spec_file.read_text()).get("model", {}).get("path")
        if isinstance(base, str) and base:
            out.append(EvalTarget(f"{base} (step 0)", base, 0))
    return out + [EvalTarget(f"step {s}", str(p), s) for s, p in checkpoints]


def evaluate_model(
    spec: Any,
    model: str,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    actor_cpus: float = 1.0,
    in_process: bool = False,
) -> tuple[dict[str, float], dict[str, SetScores]]:
    """Evaluate one model on ``spec``'s eval sets with its rollout and reward settings, on
    the Ray cluster this process is connected to, or with ``in_process`` its one HF engine
    in this process and no Ray at all (engines and reward pool are shut down before
    returning)."""
    import time

    from rlvr.rollout import create_rollout
    from rlvr.rollout.hf import load_tokenizer
    from rlvr.train.loop import _load_prompts, _resolve_model
    from rlvr.train.reward import RewardPool

    t0 = time.perf_counter()
    path = _resolve_model(model)
    tokenizer = load_tokenizer(path)
    d = spec.data
    sets = {
        name: _load_prompts(src, tokenizer, d.prompt_template, d.max_prompt_tokens, f"--data {src}")
        for name, src in eval_sets(spec).items()
    }
    if not sets:
        raise ValueError("no eval sets: give at least one data source")
    rollout = create_rollout(spec, str(path), num_cpus=actor_cpus, in_process=in_process)
    try:
        pool = RewardPool(spec.reward)
        try:
            metrics, results = evaluate_sets(sets, rollout.generate, pool.score, spec, progress)
        finally:
            pool.close()
    finally:
        rollout.shutdown()
    metrics["time/eval_s"] = time.perf_counter() - t0
    return metrics, results


def eval_spec(
    sources: Sequence[str],
    base: Any = None,
    *,
    samples: int = 1,
    k: Sequence[int] = (1, 8),
    temperature: float = 1.0,
    max_new_tokens: int | None = None,
) -> Any:
    """The job spec of an eval-only run: ``base`` (a run's spec, or the defaults) with
    ``eval`` set to the given sources (named by :func:`set_name`, made unique) and numbers.
    Raises pydantic's ``ValidationError`` naming a bad field."""
    from rlvr.config import JobSpec

    base = base or JobSpec()
    names: dict[str, str] = {}
    for src in sources:
        name, i = set_name(src), 1
        while name in names:
            i += 1
            name = f"{set_name(src)}_{i}"
        names[name] = src
    data = base.data.model_dump()
    e = base.eval.model_dump()
    e.update(samples=samples, k=list(k), temperature=temperature)
    if names:
        e["sets"], data["eval"] = names, None
    if max_new_tokens is not None:
        e["max_new_tokens"] = max_new_tokens
    return JobSpec.model_validate({**base.model_dump(), "data": data, "eval": e})


def prompt_pass_rates(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per prompt, over a run's sample rows (``id`` or ``prompt``, ``step``, ``passed``):
    samples, passes, pass rate, first/last step seen, the last step it passed, and
    ``failing_for``: how many steps, up to the newest sample of the run, since the prompt
    last passed (since it was first seen when it never did; 0 when its latest sample
    passed). Longest-failing first, then the lowest pass rate."""
    newest = max((int(r.get("step", 0)) for r in rows), default=0)
    stats: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: int(r.get("step", 0))):
        key = str(r.get("id") or r.get("prompt") or "")
        step, ok = int(r.get("step", 0)), bool(r.get("passed"))
        s = stats.setdefault(
            key,
            {"id": key, "prompt": str(r.get("prompt", ""))[:500], "samples": 0, "passed": 0,
             "first_step": step, "last_step": step, "last_passed_step": None, "latest_passed": ok},
        )  # fmt: skip
        s["samples"] += 1
        s["passed"] += ok
        s["last_step"], s["latest_passed"] = step, ok
        if ok:
            s["last_passed_step"] = step
    for s in stats.values():
        s["pass_rate"] = s["passed"] / s["samples"]
        since = s["first_step"] if s["last_passed_step"] is None else s["last_passed_step"]
        s["failing_for"] = (
            0 if s["latest_passed"] else newest - since + (s["last_passed_step"] is None)
        )
    return sorted(stats.values(), key=lambda s: (-s["failing_for"], s["pass_rate"], s["id"]))
