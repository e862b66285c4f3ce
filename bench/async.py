"""Async RL vs the synchronous loop vs Hugging Face TRL's GRPOTrainer, side by side.

The demo spec (``examples/arithmetic.yaml``: the tiny arithmetic model, 16 prompts x 8
completions of <= 64 tokens, 40 steps) with ``algorithm.max_staleness`` 0, 1 and 2, and TRL
``GRPOTrainer`` on the same model, prompts, rewards (math + 0.1 x think_format) and
hyper-parameters, each ``rlvr train`` / TRL run a fresh process, seeds one after another:

* loop s: steps 2..40, the metrics time of the last step minus that of step 1 (rlvr; evals
  at steps 10..40 included, and also reported less the time the loop waited for them), TRL:
  the end of its last step minus the end of its first;
* first step s: process start to the first step's metrics (imports, Ray start where there
  is one, model, engines, the first step, and rlvr's step-0 eval, which runs beside the
  first step where the engine works beside the learner);
* eval: greedy accuracy on the held-out eval set at the last step (TRL: the trained model
  through ``rlvr eval``, the same prompts, template and verifier);
* peak RSS: the largest sum of resident memory over the run's whole process tree (read
  every 0.25 s; PSS, which costs ~10 ms of kernel time per process to read, every 1 s).

Every arm uses ``tis_cap: 2.0`` (the rollout-logprob correction the async loss relies on).
TRL is matched to the spec by hand: bf16 autocast, gradient checkpointing and lr decay off
(its defaults are on), our tokenizer passed in (TRL's own loading drops the tiny model's
pre-tokenizer), token-mean loss (``dapo``), clip 0.2/0.28, beta 0, one iteration per batch,
its torch threads set per ``--trl-threads`` (the best is the one compared).

    .venv/bin/python bench/async.py [--seeds 0 1 2] [--staleness 0 1 2] [--trl-threads 1 2]
                                    [--steps 40] [--engine-actor] [--baseline REV] [--gpu]
                                    [--gpu-task-on-cpu] [--uncorrected] [--mid-sequence]
                                    [--every-row] [--lr LR] [--out bench/results/async.json]

``--gpu`` runs the task sized for one GPU instead (``GPU_SPEC``: the 25M tiny model, 32
prompts x 8, rollouts from a vLLM engine sharing the GPU with the learner actor; no TRL arm).
``--gpu-task-on-cpu`` runs ``GPU_SPEC``'s algorithm and data with the CPU model, HF engine
and two reward workers: its learning without the GPU parts (vLLM, bf16, CUDA IPC).
``--engine-actor`` adds every arm once more with its engine in a Ray actor (``placement.mode:
split``): a process of its own, the layout every CPU run had before the engine moved into the
driver (its thread shares the driver's GIL with the learner; an actor shares none).
``--uncorrected`` adds every ``k > 0`` arm once more with ``tis_cap: null`` (an async run
that does not set it gets 2.0): what the correction is worth. ``--mid-sequence`` adds them
with ``rollout.mid_sequence_weight_updates`` (pushes land at the engine's next step).
``--every-row`` adds every arm once more with ``algorithm.skip_zero_advantage_rows: false``
(the learner computes the rows whose gradient is 0 too: the same gradient, slower).
``--baseline REV`` adds every rlvr arm once more from a git worktree of revision ``REV``
(before/after of a change, in one session, seed by seed). ``--lr`` sets every arm's
learning rate (TRL's too) instead of the spec's.

Needs ``trl`` for the TRL arm (``pip install -e '.[bench]'``); without it the arm is skipped.
Other processes on the machine make every number pessimistic: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._results import write_result  # noqa: E402

SPEC = ROOT / "examples" / "arithmetic.yaml"


# ``--gpu``: the same task sized for one GPU, rollouts from a vLLM engine sharing it with the
# learner (the 25M tiny model; 32 prompts x 8 completions a step).
GPU_SPEC = {
    "name": "arithmetic-gpu",
    "model": {"path": "tiny:arithmetic?size=gpu"},
    "data": {
        "train": "builtin:arithmetic?n=4000&split=train",
        "eval": "builtin:arithmetic?n=400&seed=1&split=test",
        "prompt_template": "think",
    },
    "reward": {
        "verifiers": [{"name": "math", "weight": 1.0}, {"name": "think_format", "weight": 0.1}],
        "workers": 8,
    },
    "algorithm": {
        "estimator": "grpo",
        "group_size": 8,
        "prompts_per_step": 32,
        "lr": 1.0e-4,
        "loss_agg": "token_mean",
        "micro_batch_tokens": 16384,
    },  # fmt: skip
    "rollout": {
        "engine": "vllm",
        "max_new_tokens": 64,
        "temperature": 0.7,
        "gpu_memory_utilization": 0.3,
    },  # fmt: skip
    "eval": {"every": 10},
}
GPU = False  # set by --gpu
GPU_TASK_ON_CPU = False  # set by --gpu-task-on-cpu
LR: float | None = None  # set by --lr (every arm, TRL's too)


def _spec_dict(
    steps: int, seed: int, staleness: int, placement: str = "auto", tis_cap: float | None = 2.0
) -> dict:
    import copy

    import yaml

    spec = copy.deepcopy(GPU_SPEC) if GPU or GPU_TASK_ON_CPU else yaml.safe_load(SPEC.read_text())
    if GPU_TASK_ON_CPU:  # its algorithm and data; the CPU model, engine and reward workers
        spec["model"]["path"] = "tiny:arithmetic"
        spec["rollout"] = {"engine": "auto", "max_new_tokens": 64, "temperature": 0.7}
        spec["reward"]["workers"] = 2
    a = spec["algorithm"]
    a.update(max_steps=steps, seed=seed, max_staleness=staleness, tis_cap=tis_cap)
    if LR is not None:
        a["lr"] = LR
    spec["checkpoint"] = {"every": steps}
    if not GPU:  # CPU: split = engine actor, auto/colocate = driver
        spec["placement"] = {"mode": placement}
    return spec


def _watch(proc: subprocess.Popen) -> tuple[float, float]:
    """Wait for ``proc``; the peak summed RSS and PSS (GB) of its process tree meanwhile.
    RSS counts a shared library once per process that maps it; PSS splits it among them."""
    import psutil

    root = psutil.Process(proc.pid)
    peak_rss = peak_pss = 0
    polls = 0
    while proc.poll() is None:
        rss = pss = 0
        full = polls % 4 == 0  # PSS reads /proc/<pid>/smaps: not every time (it loads the run)
        polls += 1
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:
                info = p.memory_full_info() if full else p.memory_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        peak_rss = max(peak_rss, rss)
        if full:
            peak_pss = max(peak_pss, pss)
        time.sleep(0.25)
    return peak_rss / 1e9, peak_pss / 1e9


def rlvr_run(
    steps: int,
    seed: int,
    staleness: int,
    placement: str = "auto",
    code: Baseline | None = None,
    tis_cap: float | None = 2.0,
    mid_sequence: bool = False,
    every_row: bool = False,
) -> dict:
    """One ``rlvr train`` of the demo spec; ``code``: run another revision's checkout."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.yaml"
        spec = _spec_dict(steps, seed, staleness, placement, tis_cap)
        if mid_sequence:  # (only then: an older revision's spec has no such field)
            spec["rollout"]["mid_sequence_weight_updates"] = True
        if every_row:
            spec["algorithm"]["skip_zero_advantage_rows"] = False
        spec_file.write_text(yaml.safe_dump(spec))
        run_dir = Path(tmp) / "run"
        env = dict(os.environ)
        if code is not None:  # that checkout's packages first (the reward workers inherit it)
            env["PYTHONPATH"] = str(code.path)
        # stderr to a file, not a pipe: a chatty run (engine and actor logs) would fill the
        # pipe and block while nothing reads it
        log = (Path(tmp) / "stderr.log").open("w+")
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlvr", "train", str(spec_file), "--run-dir", str(run_dir),
             "--quiet"],
            stdout=subprocess.DEVNULL, stderr=log, text=True, cwd=tmp, env=env,
        )  # fmt: skip
        peak, pss = _watch(proc)
        err = _tail(log)
        if proc.returncode != 0:
            raise RuntimeError(f"rlvr train failed ({proc.returncode}):\n{err[-3000:]}")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    by_step = {r["step"]: r for r in records}
    last = by_step[steps]
    loop_s = last["time"] - by_step[1]["time"]
    # the time the loop stood still for evals (an eval beside the next step: only its wait)
    eval_s = sum(r.get("time/eval_wait_s", r.get("time/eval_s", 0.0)) for r in records
                 if r["step"] > 0)  # fmt: skip
    train = [r for r in records if r["step"] > 0]
    return {
        "arm": f"rlvr k={staleness}"
        + (", engine actor" if placement == "split" else "")
        + (", tis_cap null" if tis_cap is None else "")
        + (", mid-sequence" if mid_sequence else "")
        + (", every row" if every_row else "")
        + (f" @{code.rev}" if code is not None else ""),
        "seed": seed,
        "loop_s": loop_s,
        "loop_no_eval_s": loop_s - eval_s,
        "first_step_s": by_step[1]["time"] - t0,
        "eval_start": by_step[0]["eval/accuracy"],
        "eval_end": last["eval/accuracy"],
        "peak_rss_gb": peak,
        "peak_pss_gb": pss,
        "staleness_mean": sum(r["async/staleness_mean"] for r in train) / len(train),
        "rollout_busy_frac": last["async/rollout_busy_frac"],
        "learner_busy_frac": last["async/learner_busy_frac"],
        "sync_method": last.get("sync/method"),  # rlvr.rollout.weight_sync.SYNC_METHOD_CODES
        # per-step means over the training steps (where the loop's time goes)
        **{
            name: sum(r.get(key, 0.0) for r in train) / len(train)
            for name, key in [
                ("rollout_s", "time/rollout_s"),
                ("learn_s", "time/learn_s"),
                ("sync_s", "time/sync_s"),
                ("rollout_wait_s", "async/rollout_wait_s"),
                ("learner_wait_s", "async/learner_wait_s"),
                ("mid_sequence_frac", "async/mid_sequence_frac"),
            ]
        },  # fmt: skip
        # what the run learned, step by step: to tell a collapse's cause afterwards (the
        # ratio, the engine/learner mismatch, the gradient) without running it again
        "curve": [
            {"step": r["step"], **{k: round(float(r[k]), 5) for k in CURVE_METRICS if k in r}}
            for r in records
        ],
    }


# The per-step metrics a row's "curve" keeps.
CURVE_METRICS = (
    "reward/mean", "eval/accuracy", "response/length_mean", "entropy", "clip_frac",
    "ratio_mean", "tis_weight_mean", "mismatch/kl", "grad_norm", "learner/skipped_rows",
    "async/staleness_mean",
)  # fmt: skip


@dataclass
class Baseline:
    """Another revision of this repository, checked out beside it (``--baseline REV``): its
    rlvr arms run in the same session as this checkout's, for a before/after of a change."""

    rev: str
    path: Path

    @classmethod
    def check_out(cls, rev: str) -> Baseline:
        path = Path(tempfile.mkdtemp(prefix="rlvr-baseline-")) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                       check=True, capture_output=True)  # fmt: skip
        short = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                               check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
        return cls(short, path)

    def remove(self) -> None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True)  # fmt: skip


# -- TRL ---------------------------------------------------------------------------------------
def trl_child(steps: int, seed: int, threads: int, out_dir: str) -> None:
    """Runs in its own process: TRL GRPOTrainer on the demo spec; writes timings + model."""
    import torch

    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.config import JobSpec
    from rlvr.data import load_prompts, render_prompt
    from rlvr.models import resolve_model
    from rlvr.rollout.hf import load_tokenizer
    from verifiers import get_verifier

    spec = JobSpec.model_validate(_spec_dict(steps, seed, 0))
    a, r = spec.algorithm, spec.rollout
    model_path = resolve_model(spec.model.path)
    tokenizer = load_tokenizer(model_path)  # keeps the tiny model's pre-tokenizer
    records = load_prompts(spec.data.train)
    rows = [
        {"prompt": render_prompt(tokenizer, rec, spec.data.prompt_template),
         "reference": rec.reference}
        for rec in records
    ]  # fmt: skip
    terms = [(get_verifier(v.name, **v.options), v.weight) for v in spec.reward.verifiers]

    def reward_fn(verifier):
        def score(completions, reference, **_):
            return [
                float(verifier.verify(c, ref).score)
                for c, ref in zip(completions, reference, strict=True)
            ]

        score.__name__ = f"reward_{verifier.name}"
        return score

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                stamps.append(time.time())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.time())

    config = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=a.prompts_per_step * a.group_size,
        num_generations=a.group_size,
        max_completion_length=r.max_new_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_steps=steps,
        beta=0.0,
        epsilon=a.clip_low,
        epsilon_high=a.clip_high,
        loss_type="dapo",
        num_iterations=1,
        max_grad_norm=a.max_grad_norm,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        reward_weights=[w for _, w in terms],
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn(v) for v, _ in terms],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Stamp()],
    )
    trainer.train()
    final = Path(out_dir) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    (Path(out_dir) / "stamps.json").write_text(json.dumps(stamps))


def trl_run(steps: int, seed: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        log = (Path(tmp) / "stderr.log").open("w+")
        t0 = time.time()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.Popen(
            [sys.executable, __file__, "--trl-child", str(steps), str(seed), str(threads), tmp,
             str(LR or "")],
            stdout=subprocess.DEVNULL, stderr=log, text=True, env=env,
        )  # fmt: skip
        peak, pss = _watch(proc)
        err = _tail(log)
        if proc.returncode != 0:
            raise RuntimeError(f"TRL failed ({proc.returncode}):\n{err[-3000:]}")
        stamps = json.loads((Path(tmp) / "stamps.json").read_text())
        spec = _spec_dict(steps, seed, 0)
        out = subprocess.run(
            [sys.executable, "-m", "rlvr", "eval", str(Path(tmp) / "final"), "--data",
             spec["data"]["eval"], "--json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"rlvr eval failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout)
    accuracy = _first_accuracy(result)
    return {
        "arm": f"TRL threads={threads}",
        "seed": seed,
        "loop_s": stamps[-1] - stamps[1],
        "loop_no_eval_s": stamps[-1] - stamps[1],
        "first_step_s": stamps[1] - t0,
        "eval_start": None,
        "eval_end": accuracy,
        "peak_rss_gb": peak,
        "peak_pss_gb": pss,
    }


def _tail(log, chars: int = 3000) -> str:
    """The last ``chars`` of a child's stderr file (then closed)."""
    log.seek(0)
    text = log.read()[-chars:]
    log.close()
    return text


def _first_accuracy(result: dict) -> float:
    """Greedy accuracy on the first eval set, from ``rlvr eval --json``."""
    return float(result["results"][0]["metrics"]["eval/accuracy"])


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"


def _show(row: dict) -> None:
    """One finished arm as a line of JSON (its curve is in the results file only)."""
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)


def _table(rows: list[dict]) -> str:
    arms: dict[str, list[dict]] = {}
    for r in rows:
        arms.setdefault(r["arm"], []).append(r)

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else float("nan")

    head = (f"{'arm':<24} {'seeds':>5} {'loop s':>8} {'no-eval s':>9} {'1st step s':>10} "
            f"{'eval end':>9} {'RSS GB':>7} {'PSS GB':>7} {'gen s':>6} {'learn s':>7} "
            f"{'stale':>5}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for arm, rs in arms.items():
        lines.append(
            f"{arm:<24} {len(rs):>5} {mean([r['loop_s'] for r in rs]):>8.1f} "
            f"{mean([r['loop_no_eval_s'] for r in rs]):>9.1f} "
            f"{mean([r['first_step_s'] for r in rs]):>10.1f} "
            f"{mean([r['eval_end'] for r in rs]):>9.3f} {mean([r['peak_rss_gb'] for r in rs]):>7.2f} "
            f"{mean([r['peak_pss_gb'] for r in rs]):>7.2f} "
            f"{mean([r.get('rollout_s') for r in rs]):>6.2f} "
            f"{mean([r.get('learn_s') for r in rs]):>7.2f} "
            f"{mean([r.get('staleness_mean') for r in rs]):>5.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    global GPU, GPU_TASK_ON_CPU, LR
    if len(sys.argv) > 1 and sys.argv[1] == "--trl-child":
        steps, seed, threads, out_dir, lr = sys.argv[2:7]
        LR = float(lr) if lr else None
        trl_child(int(steps), int(seed), int(threads), out_dir)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trl-threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument(
        "--engine-actor",
        action="store_true",
        help="also every arm with its engine in an actor (placement.mode: split): its own "
        "process, as every CPU run had before the engine moved into the driver",
    )
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the rlvr arms of this git revision (a worktree of it), seed by seed "
        "beside this checkout's: a before/after of a change in one session",
    )
    ap.add_argument(
        "--uncorrected",
        action="store_true",
        help="also every k > 0 arm with tis_cap: null (no correction for the staleness)",
    )
    ap.add_argument(
        "--mid-sequence",
        action="store_true",
        help="also every k > 0 arm with rollout.mid_sequence_weight_updates",
    )
    ap.add_argument(
        "--every-row",
        action="store_true",
        help="also every arm with algorithm.skip_zero_advantage_rows: false",
    )
    ap.add_argument(
        "--gpu",
        action="store_true",
        help="the task sized for one GPU with a vLLM engine (GPU_SPEC; no TRL arm)",
    )
    ap.add_argument(
        "--gpu-task-on-cpu",
        action="store_true",
        help="GPU_SPEC's algorithm and data (32 prompts a step, micro_batch_tokens, lr 1e-4) "
        "with the CPU model and HF engine: tells the GPU task's learning from its GPU parts",
    )
    ap.add_argument(
        "--lr",
        type=float,
        help="every arm's algorithm.lr instead of the spec's (TRL's too): max_staleness 2 "
        "needs a lower one than the demo's 3e-4",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "async.json"))
    args = ap.parse_args()
    GPU = args.gpu
    LR = args.lr
    GPU_TASK_ON_CPU = args.gpu_task_on_cpu and not GPU
    if GPU or GPU_TASK_ON_CPU:
        args.trl_threads = []
    baseline = Baseline.check_out(args.baseline) if args.baseline else None
    try:
        import trl  # noqa: F401
    except ImportError:
        print("trl is not installed: the TRL arm is skipped (pip install -e '.[bench]')")
        args.trl_threads = []
    rows = []
    for seed in args.seeds:  # seeds outermost: a drifting machine hits every arm alike
        for k in args.staleness:
            try:
                rows.append(rlvr_run(args.steps, seed, k))
            except RuntimeError as e:  # one failed arm must not lose the others' numbers
                print(f"rlvr k={k} seed={seed} failed: {e}", flush=True)
                continue
            _show(rows[-1])
            if baseline is not None:
                rows.append(rlvr_run(args.steps, seed, k, code=baseline))
                _show(rows[-1])
            if args.uncorrected and k > 0:
                rows.append(rlvr_run(args.steps, seed, k, tis_cap=None))
                _show(rows[-1])
            if args.mid_sequence and k > 0:
                rows.append(rlvr_run(args.steps, seed, k, mid_sequence=True))
                _show(rows[-1])
            if args.every_row:
                rows.append(rlvr_run(args.steps, seed, k, every_row=True))
                _show(rows[-1])
            if args.engine_actor:
                rows.append(rlvr_run(args.steps, seed, k, placement="split"))
                _show(rows[-1])
        for threads in args.trl_threads:
            rows.append(trl_run(args.steps, seed, threads))
            _show(rows[-1])
    if baseline is not None:
        baseline.remove()
    table = _table(rows)
    print(table)
    write_result(
        args.out,
        {
            "bench": "async",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
            + (f", {_gpu_name()}" if GPU else ""),
            "steps": args.steps,
            "spec": "GPU_SPEC (vLLM)" if GPU else "examples/arithmetic.yaml",
            "rows": rows,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
