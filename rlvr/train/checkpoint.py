"""Checkpoints: ``run_dir/checkpoints/step_N/``, each a complete HF model directory plus the
trainer's state, written atomically.

Contents of ``step_N/``::

    config.json, model.safetensors, generation_config.json   the policy (save_pretrained)
    tokenizer.json, tokenizer_config.json, ...                its tokenizer
    optimizer.pt                                              AdamW state (torch.save)
    sharded/                                                  instead of optimizer.pt under
                                                              algorithm.sharding=fsdp: every
                                                              learner's weight and AdamW shards
                                                              (torch.distributed.checkpoint)
    rng.pt                                                    python / numpy / torch RNG states
    trainer_state.json                                        step, data position, versions

A checkpoint is written into ``step_N.tmp/`` and renamed when complete (``trainer_state.json``
last), so a run killed mid-write never leaves a half checkpoint that resume would pick up;
only the newest ``keep`` complete checkpoints stay on disk.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng.pt"
_STEP_RE = re.compile(r"^step_(\d+)$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{int(step)}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(step, path)``, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    write_model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` and prune old ones; returns its directory.

    ``write_model(path)`` writes the HF model files and ``optimizer.pt`` (the learner's
    :meth:`~rlvr.train.learner.Learner.save`).
    """
    final = checkpoint_path(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_model(tmp)
    tokenizer.save_pretrained(str(tmp))
    torch.save(rng_state(), tmp / RNG_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "step": int(step)}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint; RNG states are restored separately."""
    return json.loads((Path(path) / STATE_FILE).read_text())


def restore_rng(path: str | Path) -> None:
    """Restore the driver's RNGs from a checkpoint."""
    set_rng_state(torch.load(Path(path) / RNG_FILE, weights_only=False))
