"""``rlvr export``: a checkpoint of a real (LoRA) run as a directory transformers loads, which
generates what the run's own engine generates; the adapter alone; the model card; bad input."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from rlvr.cli import main as rlvr_main
from rlvr.config import JobSpec
from rlvr.export import ExportError, iter_tar, plan_export

pytestmark = pytest.mark.slow

PROMPTS = [
    f"<|im_start|>user\nWhat is {a} + {b}?<|im_end|>\n<|im_start|>assistant\n"
    for a, b in [(12, 30), (7, 58), (41, 41)]
]


@pytest.fixture(scope="module")
def lora_run(ray_cluster, random_model_dir, tmp_path_factory) -> Path:
    """Two steps of a LoRA run on the small random model, a checkpoint at each step."""
    from rlvr.train import run

    spec = JobSpec.model_validate(
        {
            "name": "export-me",
            "model": {"path": str(random_model_dir),
                      "lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
            "data": {"train": "builtin:arithmetic?n=16", "eval": "builtin:arithmetic?n=4&seed=1"},
            "reward": {"verifiers": [{"name": "math"}], "workers": 1},
            "algorithm": {"group_size": 2, "prompts_per_step": 2, "max_steps": 2, "lr": 3e-3,
                          "entropy_coef": 0.5,  # a gradient whatever the (zero) rewards
                          "micro_batch_size": 4},
            "rollout": {"engine": "hf", "max_new_tokens": 8},
            "checkpoint": {"every": 1, "keep": 3},
            "eval": {"every": 1, "max_new_tokens": 8},
        }
    )  # fmt: skip
    run_dir = tmp_path_factory.mktemp("export") / "run"
    assert run(spec, run_dir, actor_cpus=0).status == "succeeded"
    return run_dir


def _engine_greedy(model_dir: Path) -> list[str]:
    """Greedy completions from the run's own rollout engine (HFEngine) on ``model_dir``."""
    from rlvr.rollout.base import SamplingConfig
    from rlvr.rollout.hf import HFEngine, HFEngineConfig

    engine = HFEngine(HFEngineConfig(model=str(model_dir)))
    ids = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    out = engine.generate(ids, SamplingConfig(n=1, max_new_tokens=12, temperature=0.0))
    return [c.text for c in out]


def _hf_greedy(model_dir: Path) -> list[str]:
    """Greedy completions through plain transformers, as a user of the export would. (The
    tokenizer as the run loads it: transformers 5's AutoTokenizer rebuilds a Qwen2 tokenizer
    from the vocabulary and drops this character-level tokenizer's pre-tokenizer.)"""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=12, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
        texts.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return texts


def test_export_loads_with_from_pretrained_and_generates_the_engines_greedy_text(
    lora_run, random_model_dir, tmp_path
):
    out = tmp_path / "model"
    assert rlvr_main(["export", str(lora_run), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not names & {"optimizer.pt", "rng.pt", "trainer_state.json", "adapter"}
    assert _hf_greedy(out) == _engine_greedy(lora_run / "checkpoints" / "step_2")

    from safetensors.torch import load_file

    trained, base = (
        load_file(out / "model.safetensors"),
        load_file(random_model_dir / "model.safetensors"),
    )
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained[q], base[q])  # the LoRA update is merged in

    card = (out / "README.md").read_text()
    assert f"base_model: {json.dumps(str(random_model_dir))}" in card
    assert "builtin:arithmetic?n=16" in card and "grpo" in card and "| step | 2 of 2 |" in card
    assert "| eval/accuracy |" in card


def test_adapter_export_is_the_peft_adapter_on_the_base(lora_run, random_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    assert rlvr_main(["export", str(lora_run), "--step", "1", "--adapter", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert (
        "model.safetensors" not in names and "library_name: peft" in (out / "README.md").read_text()
    )
    merged = AutoModelForCausalLM.from_pretrained(lora_run / "checkpoints" / "step_1").eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(random_model_dir), out)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft.eval()(ids).logits, atol=1e-4)


def test_tar_stream_holds_the_same_files(lora_run, tmp_path):
    plan = plan_export(lora_run, 2)
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"".join(iter_tar(plan, "export-me-step_2")))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    got = tmp_path / "x" / "export-me-step_2"
    for name, src in plan.files:
        assert (got / name).read_bytes() == src.read_bytes()
    assert (got / "README.md").read_text() == plan.card


def test_bad_exports_are_clear_errors(lora_run, tmp_path, capsys):
    with pytest.raises(ExportError, match=r"no checkpoint at step 7; checkpoints: 1, 2"):
        plan_export(lora_run, 7)
    with pytest.raises(ExportError, match="has no checkpoint yet"):
        plan_export(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert rlvr_main(["export", str(lora_run), "--out", str(tmp_path / "full")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    missing = rlvr_main(["export", "no-such-job", "--out", str(tmp_path / "o"),
                         "--db", str(tmp_path / "none.db")])  # fmt: skip
    assert missing == 2 and "not a run directory" in capsys.readouterr().err
