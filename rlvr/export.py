"""Models out of a run: a checkpoint as a directory that ``transformers`` and vLLM load.

``rlvr export RUN_DIR_OR_JOB_ID [--step N] --out DIR [--adapter]`` and
``GET /v1/jobs/{id}/checkpoints/{step}/download`` (the same files, as a tar) both come here.

What is exported from ``RUN_DIR/checkpoints/step_N/`` (:mod:`rlvr.train.checkpoint`):

* the model (default): ``config.json``, the weights (``*.safetensors``), the generation
  config, the tokenizer and its chat template: what ``AutoModelForCausalLM.from_pretrained``
  and ``vllm.LLM`` read. A LoRA run's checkpoints already hold the adapters merged in.
* ``adapter=True`` (LoRA runs only): the peft adapter alone (``adapter_config.json``,
  ``adapter_model.safetensors``) plus the tokenizer, for ``PeftModel.from_pretrained`` or
  vLLM's ``--enable-lora``; the base model is the run's ``model.path``.

Never exported: the trainer's state (``optimizer.pt``, ``rng.pt``, ``trainer_state.json``).
Both forms get a ``README.md`` model card: the base model, the data and template, the
algorithm and the eval results up to that step. Only regular files inside the checkpoint
are read (symbolic links are skipped), so an export cannot reach outside its run.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"  # as rlvr.train.checkpoint (not imported: it needs torch)
STATE_FILE = "trainer_state.json"
ADAPTER_DIR = "adapter"  # as rlvr.models.causal_lm.ADAPTER_DIR
TRAINER_FILES = frozenset({"optimizer.pt", "rng.pt", STATE_FILE})
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "chat_template.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "added_tokens.json",
    }
)
CARD_FILE = "README.md"
_CHUNK = 1 << 20


class ExportError(ValueError):
    """The run, step or form asked for cannot be exported; the message says why."""


@dataclass(frozen=True)
class ExportPlan:
    """The files of one export: ``(name in the export, file in the checkpoint)`` + the card."""

    run_dir: Path
    step: int
    adapter: bool
    files: list[tuple[str, Path]]
    card: str


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The complete checkpoints of a run (those with ``trainer_state.json``), oldest first."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        name = p.name
        if name.startswith("step_") and name[5:].isdigit() and (p / STATE_FILE).is_file():
            steps.append(int(name[5:]))
    return sorted(steps)


def _regular_files(folder: Path) -> list[Path]:
    """Regular files directly in ``folder`` (no links, nothing that resolves elsewhere)."""
    real = folder.resolve()
    return sorted(
        p for p in folder.iterdir()
        if not p.is_symlink() and p.is_file() and p.resolve().parent == real
    )  # fmt: skip


def plan_export(
    run_dir: str | Path,
    step: int | None = None,
    adapter: bool = False,
    spec: dict[str, Any] | None = None,
) -> ExportPlan:
    """What exporting checkpoint ``step`` (default: the newest) of ``run_dir`` writes.

    ``spec`` (the job's spec as a dict) is what the model card describes; default: the run's
    ``spec.json``."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    steps = checkpoint_steps(run)
    if not steps:
        raise ExportError(f"{run_dir}: the run has no checkpoint yet (checkpoint.every)")
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise ExportError(
            f"{run_dir}: no checkpoint at step {step}; checkpoints: " + ", ".join(map(str, steps))
        )
    ckpt = run / CHECKPOINTS_DIR / f"step_{step}"
    files: list[tuple[str, Path]] = []
    if adapter:
        adir = ckpt / ADAPTER_DIR
        if adir.is_symlink() or not (adir / "adapter_config.json").is_file():
            raise ExportError(
                f"{run_dir}: step {step} has no LoRA adapter (the run did not set model.lora); "
                "export the whole model instead (without --adapter)"
            )
        files += [(p.name, p) for p in _regular_files(adir)]
        files += [(p.name, p) for p in _regular_files(ckpt) if p.name in TOKENIZER_FILES]
    else:
        files += [(p.name, p) for p in _regular_files(ckpt) if p.name not in TRAINER_FILES]
        if "config.json" not in {name for name, _ in files}:
            raise ExportError(f"{run_dir}: step {step} holds no config.json")
    files = [(n, p) for n, p in files if n != CARD_FILE]
    return ExportPlan(run, step, adapter, files, model_card(run, step, adapter, spec))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _eval_results(run: Path, step: int) -> dict[str, tuple[int, float]]:
    """``eval/...`` metrics at or before ``step``: name -> (its step, value), the latest."""
    out: dict[str, tuple[int, float]] = {}
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        at = row.get("step") if isinstance(row, dict) else None
        if not isinstance(at, int) or at > step:
            continue
        for key, value in row.items():
            if key.startswith("eval/") and isinstance(value, int | float):
                out[key] = (at, float(value))
    return out


def model_card(run: Path, step: int, adapter: bool, spec: dict[str, Any] | None = None) -> str:
    """The export's ``README.md``: where the model came from and how well it does."""
    if spec is None:
        spec = _read_json(run / "spec.json") or {}
    model, data = spec.get("model", {}), spec.get("data", {})
    algo, reward = spec.get("algorithm", {}), spec.get("reward", {})
    base = model.get("path", "unknown")
    verifiers = ", ".join(
        f"{v.get('name')} (weight {v.get('weight', 1.0)})" for v in reward.get("verifiers", [])
    )
    template = data.get("template", data.get("prompt_template", "think"))
    system = json.dumps(data["system_prompt"]) if data.get("system_prompt") else "the template's"
    lines = [
        "---",
        "library_name: " + ("peft" if adapter else "transformers"),
        f"base_model: {json.dumps(base)}",
        "tags: [rlvr, reinforcement-learning, " + str(algo.get("estimator", "grpo")) + "]",
        "---",
        "",
        f"# {spec.get('name', run.name)}, step {step}",
        "",
        "Trained with reinforcement learning from verifiable rewards (rlvr). "
        + (
            "This is the LoRA adapter alone: load it on the base model."
            if adapter
            else "LoRA adapters, if any, are merged into the weights."
        ),
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}` |",
        f"| LoRA | {json.dumps(model.get('lora')) if model.get('lora') else 'no'} |",
        f"| training data | `{data.get('train', '?')}` |",
        f"| prompt template | `{template}` |",
        f"| system prompt | {system} |",
        f"| reward | {verifiers or '?'} |",
        f"| algorithm | {algo.get('estimator', 'grpo')}, group size {algo.get('group_size', '?')}, "
        f"{algo.get('prompts_per_step', '?')} prompts per step, lr {algo.get('lr', '?')}, "
        f"KL coef {algo.get('kl_coef', 0.0)} |",
        f"| step | {step} of {algo.get('max_steps', '?')} |",
        "",
        "## Eval results",
        "",
    ]
    results = _eval_results(run, step)
    if results:
        lines += ["| metric | value | at step |", "|---|---|---|"]
        lines += [f"| {k} | {v:.4f} | {at} |" for k, (at, v) in sorted(results.items())]
    else:
        lines.append("No evaluation was recorded up to this step.")
    lines.append("")
    return "\n".join(lines)


def export_checkpoint(
    run_dir: str | Path, out: str | Path, step: int | None = None, adapter: bool = False
) -> ExportPlan:
    """Write the export into ``out`` (created; an existing non-empty directory is an error)."""
    plan = plan_export(run_dir, step, adapter)
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"--out {out}: exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in plan.files:
        shutil.copyfile(src, dest / name)
    (dest / CARD_FILE).write_text(plan.card)
    return plan


def _member(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def iter_tar(plan: ExportPlan, folder: str) -> Iterator[bytes]:
    """The export as an uncompressed tar, chunk by chunk (files are never read whole), every
    member under ``folder/``. A file that shrinks while it is read ends the stream with an
    error rather than a silently corrupt archive."""
    now = time.time()
    for name, src in plan.files:
        size = src.stat().st_size
        yield _member(f"{folder}/{name}", size, src.stat().st_mtime)
        left = size
        with open(src, "rb") as fh:
            while left:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    raise ExportError(f"{src.name} changed while it was being sent")
                left -= len(chunk)
                yield chunk
        yield b"\0" * (-size % tarfile.BLOCKSIZE)
    card = plan.card.encode()
    yield _member(f"{folder}/{CARD_FILE}", len(card), now)
    yield card + b"\0" * (-len(card) % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
