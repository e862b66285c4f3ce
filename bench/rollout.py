"""Rollout throughput on one GPU: our vLLM engine (through its Ray actor) vs raw vLLM vs HF.

Same model (random-init, Qwen2.5-0.5B shapes by default, built locally), same prompts, same
sampling (temperature 1, ``logprobs=0``, ``ignore_eos`` so every completion is exactly
``--new-tokens`` long):

- ``ours``: ``VllmRollout.replicas.generate`` from the driver: a Ray actor holding ``vllm.LLM`` with its
  engine core in-process; includes shipping the completions (tokens, logprobs, text) back.
- ``raw``: ``vllm.LLM.generate`` in a plain process with vLLM's defaults (engine core in a
  separate process), the same ``LLM`` arguments and ``SamplingParams``.
- ``raw_inproc`` (``--explain`` runs it when ours < 95% of raw): raw vLLM with the engine core
  in-process, like our actor, to tell actor overhead from in-process-engine overhead.
- ``hf``: ``transformers`` ``generate`` in bf16 (sdpa), batches of ``--hf-batch``, sampling.

Each engine runs in a fresh subprocess (clean GPU memory, no engine left behind).

    python bench/rollout.py                                   # 256 prompts x 512 tokens
    python bench/rollout.py --engines ours,raw --prompts 64 --out /tmp/r.json

Prints a table and writes JSON (``--out``, default ``bench/results/rollout.json``). Needs a
CUDA GPU and vLLM (see docs/gpu.md); exits 2 with a message otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENGINES = ("ours", "raw", "raw_inproc", "hf")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="qwen2.5-0.5b", help="model shape (bench/_gpu_models.SHAPES)")
    p.add_argument(
        "--model-dir", default=None, help="reuse a model directory instead of building one"
    )
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument(
        "--engines", default="ours,raw,hf", help=f"comma-separated subset of {','.join(ENGINES)}"
    )
    p.add_argument(
        "--explain", action="store_true", help="also run raw_inproc if ours < 95%% of raw"
    )
    p.add_argument("--hf-batch", type=int, default=64)
    p.add_argument("--hf-prompts", type=int, default=64, help="prompts for hf (it is slow)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=900, help="seconds per engine run")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "rollout.json"))
    p.add_argument("--_measure", default=None, help=argparse.SUPPRESS)  # internal: one engine
    p.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("prompts", "prompt_len", "new_tokens", "hf_batch", "hf_prompts"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.gpu_memory_utilization <= 0.95:
        p.error("--gpu-memory-utilization must be in (0, 0.95]")
    from bench._gpu_models import SHAPES

    if args.shape not in SHAPES:
        p.error(f"--shape must be one of {', '.join(sorted(SHAPES))}")
    engines = [e for e in args.engines.split(",") if e]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        p.error(f"--engines must be a comma-separated subset of {','.join(ENGINES)} (bad: {bad})")
    args.engine_list = engines
    return args


def _requirements_missing() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "bench/rollout.py needs a CUDA GPU (see docs/gpu.md for the lent H100)"
    if importlib.util.find_spec("vllm") is None:
        return (
            "bench/rollout.py needs vLLM (pip install 'rlvr[vllm]', or the GPU bundle: docs/gpu.md)"
        )
    return None


# -- one engine, in its own process --------------------------------------------------------------
def _engine_config(args):
    from rlvr.rollout.vllm import VllmEngineConfig

    return VllmEngineConfig(
        model=args.model_dir,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.prompt_len + args.new_tokens + 16,
    )


def _sampling():
    from rlvr.rollout.base import SamplingConfig

    return SamplingConfig(n=1, temperature=1.0, top_p=1.0)


def _measure(args, prompts: list[list[int]]) -> dict:
    engine = args._measure
    warm = prompts[:8]
    if engine in ("raw", "raw_inproc"):
        if engine == "raw_inproc":
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # before importing vLLM
        from vllm import LLM, SamplingParams

        from rlvr.rollout.vllm import sampling_params_kwargs

        t0 = time.perf_counter()
        llm = LLM(**_engine_config(args).llm_kwargs())
        start_s = time.perf_counter() - t0

        def run(ps, max_tokens):
            s = _sampling()
            s.max_new_tokens = max_tokens
            params = SamplingParams(**sampling_params_kwargs(s, len(ps), ignore_eos=True)[0])
            outs = llm.generate([{"prompt_token_ids": p} for p in ps], params, use_tqdm=False)
            return sum(len(c.token_ids) for o in outs for c in o.outputs)

    elif engine == "ours":
        import ray

        from rlvr.rollout.vllm import VllmRollout

        ray.init(include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        rollout = VllmRollout(_engine_config(args), replicas=1, num_gpus=1.0, num_cpus=1)
        start_s = time.perf_counter() - t0

        def run(ps, max_tokens):
            s = _sampling()
            s.max_new_tokens = max_tokens
            # The engines' own ignore_eos (decode exactly max_new_tokens), past the rollout's
            # request checks: the benchmark's prompts are made to fit.
            completions = rollout.replicas.generate(ps, s, ignore_eos=True)
            return sum(len(c.token_ids) for c in completions)

    else:  # hf
        import torch
        from transformers import AutoModelForCausalLM

        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            args.model_dir, dtype=torch.bfloat16, attn_implementation="sdpa"
        ).cuda()
        start_s = time.perf_counter() - t0
        prompts = prompts[: args.hf_prompts]

        @torch.no_grad()
        def run(ps, max_tokens):
            n = 0
            for i in range(0, len(ps), args.hf_batch):
                ids = torch.tensor(ps[i : i + args.hf_batch], device="cuda")
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,  # = ignore_eos
                    pad_token_id=0,
                )
                n += (out.shape[1] - ids.shape[1]) * ids.shape[0]
            torch.cuda.synchronize()
            return n

    run(warm, 16)  # first-call costs (graph warmup, allocator) out of the timing
    t0 = time.perf_counter()
    tokens = run(prompts, args.new_tokens)
    seconds = time.perf_counter() - t0
    return {
        "engine": engine,
        "prompts": len(prompts),
        "tokens": tokens,
        "seconds": seconds,
        "tok_per_s": tokens / seconds,
        "start_s": start_s,
    }


def _run_one(args, engine: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_measure",
        engine,
        "--_result",
        result_path,
    ]
    cmd += ["--model-dir", args.model_dir, "--shape", args.shape, "--prompts", str(args.prompts)]
    cmd += ["--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens)]
    cmd += ["--hf-batch", str(args.hf_batch), "--hf-prompts", str(args.hf_prompts)]
    cmd += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    print(f"[rollout] measuring {engine} ...", flush=True)
    try:
        proc = subprocess.run(cmd, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"engine": engine, "error": f"timed out after {args.timeout:.0f} s"}
    if proc.returncode != 0:
        return {"engine": engine, "error": f"exit code {proc.returncode} (see the output above)"}
    return json.loads(Path(result_path).read_text())


def _table(results: list[dict]) -> str:
    raw = next((r["tok_per_s"] for r in results if r["engine"] == "raw" and "tok_per_s" in r), None)
    lines = [
        f"{'engine':<11} {'prompts':>7} {'tokens':>8} {'seconds':>8} {'tok/s':>9} {'vs raw':>7} {'start s':>8}"
    ]
    for r in results:
        if "error" in r:
            lines.append(f"{r['engine']:<11} error: {r['error']}")
            continue
        rel = f"{100 * r['tok_per_s'] / raw:.1f}%" if raw else "-"
        lines.append(
            f"{r['engine']:<11} {r['prompts']:>7} {r['tokens']:>8} {r['seconds']:>8.2f} "
            f"{r['tok_per_s']:>9.0f} {rel:>7} {r['start_s']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench._gpu_models import SHAPES, build_model_dir, random_prompts

    vocab = SHAPES[args.shape]["vocab_size"]
    prompts = random_prompts(args.prompts, args.prompt_len, vocab, seed=0)
    if args._measure:
        Path(args._result).write_text(json.dumps(_measure(args, prompts)))
        return 0

    missing = _requirements_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    import torch

    if args.model_dir is None:
        t0 = time.perf_counter()
        args.model_dir = str(build_model_dir(args.shape, tempfile.mkdtemp(prefix="rlvr-bench-")))
        print(f"[rollout] built {args.shape} in {time.perf_counter() - t0:.1f} s: {args.model_dir}")
        torch.cuda.empty_cache()
    results = [_run_one(args, e) for e in args.engine_list]
    by = {r["engine"]: r for r in results if "tok_per_s" in r}
    if (
        args.explain
        and "raw_inproc" not in args.engine_list
        and {"ours", "raw"} <= set(by)
        and by["ours"]["tok_per_s"] < 0.95 * by["raw"]["tok_per_s"]
    ):
        results.append(_run_one(args, "raw_inproc"))

    print(_table(results))
    report = {
        "bench": "rollout",
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "shape": args.shape,
            "prompts": args.prompts,
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "temperature": 1.0,
            "ignore_eos": True,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "hf_batch": args.hf_batch,
            "hf_prompts": args.hf_prompts,
        },
        "results": results,
    }
    if "ours" in by and "raw" in by:
        report["ours_vs_raw"] = by["ours"]["tok_per_s"] / by["raw"]["tok_per_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"[rollout] wrote {out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
