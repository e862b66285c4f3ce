"""The run directory sink and checkpoint files: exactly-once records after a resume,
torn lines from a kill, atomic checkpoints and pruning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlvr.train.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
    restore_rng,
    save_checkpoint,
)
from rlvr.train.plot import plot_curves
from rlvr.train.rundir import RunDirSink, read_jsonl


def test_truncate_after_keeps_each_step_once(tmp_path):
    sink = RunDirSink(tmp_path)
    for step in range(0, 6):
        sink.metrics(step, {"reward/mean": step / 10})
        sink.samples(step, [{"prompt": "p", "completion": str(step)}])
    sink.truncate_after(3)
    for step in range(4, 8):  # the resumed attempt redoes 4 and 5
        sink.metrics(step, {"reward/mean": step / 10})
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == list(range(8))
    assert [r["step"] for r in read_jsonl(tmp_path / "samples.jsonl")] == [0, 1, 2, 3]


def test_a_torn_last_line_is_skipped_and_nan_is_written_as_null(tmp_path):
    sink = RunDirSink(tmp_path)
    sink.metrics(1, {"loss": float("nan"), "reward/mean": 0.5})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "reward/me')  # killed mid-write
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert records == [{"step": 1, "time": records[0]["time"], "loss": None, "reward/mean": 0.5}]


def test_status_is_replaced_atomically(tmp_path):
    sink = RunDirSink(tmp_path)
    sink.status("running", step=0)
    sink.status("failed", step=3, error="boom")
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["status"], status["step"], status["error"]) == ("failed", 3, "boom")


class _Tok:
    def save_pretrained(self, path):
        (Path(path) / "tokenizer.json").write_text("{}")


def _write_model(path):
    (Path(path) / "model.safetensors").write_text("weights")


def test_checkpoints_are_complete_newest_last_and_pruned(tmp_path):
    for step in (2, 4, 6, 8):
        save_checkpoint(
            tmp_path,
            step,
            write_model=_write_model,
            tokenizer=_Tok(),
            trainer_state={"data_position": step * 16},
            keep=2,
        )
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 8]
    step, path = latest_checkpoint(tmp_path)
    assert step == 8 and path == checkpoint_path(tmp_path, 8)
    assert load_trainer_state(path) == {"data_position": 128, "step": 8}
    assert {p.name for p in path.iterdir()} >= {
        "model.safetensors",
        "tokenizer.json",
        "rng.pt",
        "trainer_state.json",
    }


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    save_checkpoint(
        tmp_path, 2, write_model=_write_model, tokenizer=_Tok(), trainer_state={}, keep=3
    )

    def crash(path):
        _write_model(path)
        raise KeyboardInterrupt  # killed while writing step 4

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, write_model=crash, tokenizer=_Tok(), trainer_state={}, keep=3)
    assert latest_checkpoint(tmp_path)[0] == 2
    # the next save of the same step cleans the leftover up
    save_checkpoint(
        tmp_path, 4, write_model=_write_model, tokenizer=_Tok(), trainer_state={}, keep=3
    )
    assert latest_checkpoint(tmp_path)[0] == 4
    assert not (tmp_path / "checkpoints" / "step_4.tmp").exists()


def test_rng_state_round_trips(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path, 1, write_model=_write_model, tokenizer=_Tok(), trainer_state={}, keep=1
    )
    expected = torch.rand(3)
    restore_rng(checkpoint_path(tmp_path, 1))
    assert torch.equal(torch.rand(3), expected)


def test_curves_png_is_written_from_metrics(tmp_path):
    sink = RunDirSink(tmp_path)
    sink.metrics(0, {"eval/accuracy": 0.3})
    for step in range(1, 5):
        sink.metrics(
            step,
            {
                "reward/mean": step / 4,
                "accuracy": step / 5,
                **({"eval/accuracy": 0.6} if step == 4 else {}),
            },
        )
    out = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_curves(tmp_path / "missing.jsonl", tmp_path / "none.png") is None
