"""One full RL step, measured: where the time goes and how fast the learner trains.

Runs the real loop (:func:`rlvr.train.run`: rollout engines in Ray actors, the reward pool,
the RLlib learner in this process, the weight sync) for ``--warmup`` + ``--steps`` steps
and reports every measured step and their medians:

* time split: rollout, reward, learn, sync, and other (batch building, metrics);
* the learner's trained tokens per second of learn time (prompt + response tokens through
  forward and backward, padding not counted) and the padding share of what it computed;
* model FLOPs utilisation, ``6 * N * tokens / seconds / peak`` with N the model's parameter
  count (attention FLOPs and LoRA's cheaper backward ignored), over the whole step (the
  issue's definition) and over the learn phase alone;
* GPU busy: ``nvidia-smi`` utilisation (share of time a kernel was running on the device,
  engines and learner together) sampled every 100 ms and averaged over each step; n/a
  without a GPU. Also the learner's peak CUDA memory.

Presets (``--preset``, default ``gpu`` when CUDA is present, else ``cpu``):

* ``cpu``: ``tiny:arithmetic`` (the warm-started tiny model, built and cached first), HF
  engine, the arithmetic task with the math and think_format verifiers.
* ``gpu``: a random-init model with Qwen2.5-0.5B shapes (``bench/_gpu_models.py``, built
  here), vLLM engine, 64 prompts x 8 samples, prompts of 128 random word tokens, 512 new
  tokens (a random model rarely stops early), micro-batches of 8192 tokens, the
  think_format verifier (math-verify on 512 random words costs ~0.1 s per completion,
  which a real model's short answers do not).

Any flag overrides its preset: ``--model`` takes a shape name of ``bench/_gpu_models.py``
(random init, synthetic prompts) or anything ``model.path`` accepts (then ``--data``).

    .venv/bin/python bench/step.py                                   # CPU preset here
    python3 bench/step.py --preset gpu --out $OUT/step.json          # on the GPU machine
    python3 bench/step.py --preset gpu --lora-rank 16 --gradient-checkpointing

Prints a table and writes JSON (``--out``, default ``bench/results/step.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._results import write_result  # noqa: E402

H100_BF16_DENSE_TFLOPS = 989.0

PRESETS: dict[str, dict] = {
    "cpu": dict(
        model="tiny:arithmetic",
        data="builtin:arithmetic?n=2000",
        engine="hf",
        prompts_per_step=16,
        group_size=8,
        prompt_len=None,
        new_tokens=64,
        micro_batch_size=16,
        micro_batch_tokens=None,
        verifiers="math,think_format",
        steps=4,
        warmup=1,
    ),
    "gpu": dict(
        model="qwen2.5-0.5b",
        data=None,
        engine="vllm",
        prompts_per_step=64,
        group_size=8,
        prompt_len=128,
        new_tokens=512,
        micro_batch_size=16,
        micro_batch_tokens=8192,
        verifiers="think_format",
        steps=3,
        warmup=1,
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--model", help="a bench/_gpu_models.py shape, or a model.path")
    p.add_argument("--data", help="data.train for a model.path model (default: arithmetic)")
    p.add_argument("--engine", choices=["hf", "vllm", "auto"])
    p.add_argument("--prompts-per-step", type=int)
    p.add_argument("--group-size", type=int)
    p.add_argument("--prompt-len", type=int, help="words per synthetic prompt (shape models)")
    p.add_argument("--new-tokens", type=int)
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--micro-batch-tokens", type=int, help="0: size micro-batches by sequences")
    p.add_argument("--verifiers", help="comma-separated reward verifiers")
    p.add_argument("--steps", type=int, help="measured steps")
    p.add_argument("--warmup", type=int, help="steps run first and not measured")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.35)
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help=f"the device's peak FLOP/s for MFU (default {H100_BF16_DENSE_TFLOPS:g}: H100 "
        "bf16 dense, on CUDA; none on CPU, so MFU is n/a there unless given)",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "step.json"))
    args = p.parse_args(argv)
    args.preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.micro_batch_tokens == 0:
        args.micro_batch_tokens = None
    for name in ("prompts_per_step", "group_size", "new_tokens", "micro_batch_size", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.group_size < 2:
        p.error("--group-size must be >= 2 (GRPO needs a group)")
    if args.warmup < 0 or args.lora_rank < 0:
        p.error("--warmup and --lora-rank must be >= 0")
    if args.peak_tflops is None and torch.cuda.is_available():
        args.peak_tflops = H100_BF16_DENSE_TFLOPS
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        p.error("--peak-tflops must be > 0")
    return args


# -- the model and its data ----------------------------------------------------------------------
def _prepare(args: argparse.Namespace, tmp: Path) -> tuple[str, str, str]:
    """(model directory, data.train, prompt template); builds what is needed (not timed)."""
    from bench._gpu_models import SHAPES, build_model_dir, random_prompts

    if args.model in SHAPES:
        model_dir = build_model_dir(args.model, tmp / "model")
        if args.prompt_len is None or args.prompt_len < 1:
            raise SystemExit("--prompt-len must be >= 1 for a shape model (synthetic prompts)")
        n = args.prompts_per_step * (args.steps + args.warmup)
        vocab = SHAPES[args.model]["vocab_size"]
        data = tmp / "prompts.jsonl"
        with data.open("w") as f:
            for ids in random_prompts(n, args.prompt_len, vocab, seed=0):
                f.write(json.dumps({"prompt": " ".join(f"w{i}" for i in ids), "reference": "0"}))
                f.write("\n")
        return str(model_dir), str(data), "plain"
    from rlvr.models import resolve_model

    return str(resolve_model(args.model)), args.data or PRESETS["cpu"]["data"], "think"


def _param_count(model_dir: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once


def _spec(args: argparse.Namespace, model_dir: str, data: str, template: str):
    from rlvr.config import JobSpec

    model: dict = {"path": model_dir, "gradient_checkpointing": args.gradient_checkpointing}
    if args.lora_rank:
        model["lora"] = {"rank": args.lora_rank, "alpha": 2.0 * args.lora_rank}
    return JobSpec.model_validate(
        {
            "name": "bench-step",
            "model": model,
            "data": {"train": data, "eval": None, "prompt_template": template},
            "reward": {
                "verifiers": [{"name": v} for v in args.verifiers.split(",") if v],
                "workers": max(1, min(8, (os.cpu_count() or 2) // 2)),
            },
            "algorithm": {
                "group_size": args.group_size,
                "prompts_per_step": args.prompts_per_step,
                "lr": 1e-6,
                "max_steps": args.warmup + args.steps,
                "micro_batch_size": args.micro_batch_size,
                "micro_batch_tokens": args.micro_batch_tokens,
            },
            "rollout": {
                "engine": args.engine,
                "max_new_tokens": args.new_tokens,
                "temperature": 1.0,
                "replicas": args.replicas,
                "gpu_memory_utilization": args.gpu_memory_utilization,
            },
            "checkpoint": {"every": 1_000_000},  # only the last step's, after the timings
            "eval": {"at_start": False},
        }
    )


# -- GPU busy --------------------------------------------------------------------------------------
class _GpuSampler:
    """``nvidia-smi`` utilisation of GPU 0 every 100 ms, time-stamped on arrival."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc = None
        if shutil.which("nvidia-smi") is None:
            return
        self._proc = subprocess.Popen(
            ["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu"]
            + ["--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                self.samples.append((time.monotonic(), float(line.strip())))
            except ValueError:
                continue

    def busy(self, start: float, end: float) -> float | None:
        """Mean utilisation (0-1) over ``[start, end]``, or None without samples."""
        inside = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(inside) / 100.0 if inside else None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()


class _StepTimes:
    """A MetricSink that notes when each step's metrics arrive (right after the step)."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float, dict]] = []

    def metrics(self, step: int, values: dict) -> None:
        self.steps.append((step, time.monotonic(), dict(values)))

    def samples(self, step, rows) -> None:
        pass

    def checkpoint(self, step, path) -> None:
        pass

    def status(self, status, *, step=None, error=None) -> None:
        pass

    def truncate_after(self, step) -> None:
        pass


# -- the run ---------------------------------------------------------------------------------------
def _row(step: int, end: float, m: dict, n_params: int, peak: float | None, gpu) -> dict:
    step_s = m["time/step_s"]
    phases = {k: m[f"time/{k}_s"] for k in ("rollout", "reward", "learn", "sync")}
    tokens = m["learner/tokens"]
    flops = 6.0 * n_params * tokens
    return {
        "step": step,
        "step_s": step_s,
        **{f"{k}_s": v for k, v in phases.items()},
        "other_s": step_s - sum(phases.values()),
        "rollout_tok_s": m["throughput/rollout_tok_s"],
        "response_len_mean": m["response/length_mean"],
        "learner_tokens": tokens,
        "learn_tok_s": tokens / max(phases["learn"], 1e-9),
        "learner_pad_frac": m["learner/pad_frac"],
        "mfu_step": None if peak is None else flops / step_s / (peak * 1e12),
        "mfu_learn": None if peak is None else flops / max(phases["learn"], 1e-9) / (peak * 1e12),
        "gpu_busy": gpu.busy(end - step_s, end),
    }


def _fmt(v, kind: str) -> str:
    if v is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "int":
        return f"{v:,.0f}"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


COLUMNS = [
    ("step", "step", "int"),
    ("step s", "step_s", "s"),
    ("rollout", "rollout_s", "s"),
    ("reward", "reward_s", "s"),
    ("learn", "learn_s", "s"),
    ("sync", "sync_s", "s"),
    ("other", "other_s", "s"),
    ("rollout tok/s", "rollout_tok_s", "int"),
    ("trained tok", "learner_tokens", "int"),
    ("learn tok/s", "learn_tok_s", "int"),
    ("pad", "learner_pad_frac", "pct"),
    ("MFU step", "mfu_step", "pct"),
    ("MFU learn", "mfu_learn", "pct"),
    ("GPU busy", "gpu_busy", "pct"),
]


def _median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    from rlvr.train import run

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir, data, template = _prepare(args, tmp)
        n_params = _param_count(model_dir)
        spec = _spec(args, model_dir, data, template)
        print(
            f"model {args.model} ({n_params / 1e6:.1f}M parameters), engine {args.engine}, "
            f"{args.prompts_per_step} prompts x {args.group_size}, {args.new_tokens} new tokens, "
            f"{args.warmup} warmup + {args.steps} measured steps",
            flush=True,
        )
        times = _StepTimes()
        load_at_start = os.getloadavg()
        gpu = _GpuSampler()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.monotonic()
        try:
            summary = run(spec, tmp / "run", sink=times)
        finally:
            gpu.stop()
        wall = time.monotonic() - t0
        peak_mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    rows = [
        _row(step, end, m, n_params, args.peak_tflops, gpu)
        for step, end, m in times.steps
        if step > args.warmup
    ]
    median = {key: _median(rows, key) for _, key, _ in COLUMNS if key != "step"}
    print(" | ".join(name for name, _, _ in COLUMNS))
    for r in rows:
        print(" | ".join(_fmt(r[key], kind) for _, key, kind in COLUMNS))
    print(" | ".join(["median"] + [_fmt(median[key], kind) for _, key, kind in COLUMNS[1:]]))
    share = {k: median[f"{k}_s"] / median["step_s"] for k in ("rollout", "reward", "learn", "sync")}
    print(
        "share of the step: "
        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in share.items())
        + (f"; learner peak CUDA memory {peak_mem:.1f} GiB" if peak_mem is not None else "")
        + f"; whole run {wall:.0f} s (start-up included)"
    )
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    result = {
        "bench": "step",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "device": device,
            "torch": torch.__version__,
            "load_avg_at_start": load_at_start,
            "load_avg_at_end": os.getloadavg(),
        },
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "model_parameters": n_params,
        "status": summary.status,
        "wall_s": wall,
        "learner_peak_cuda_gib": peak_mem,
        "steps": rows,
        "median": median,
        "median_share_of_step": share,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
