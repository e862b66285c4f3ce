"""resolve_model: tiny: specs build once into the cache; directories and HF ids resolve offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.models import ModelNotFoundError, resolve_model, tiny_model_dir_name

RANDOM_SPEC = (
    "tiny:arithmetic?warm_start=0"  # same files as tiny:arithmetic, no warm start: seconds
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="module")
def random_model(cache) -> Path:
    return resolve_model(RANDOM_SPEC, cache_dir=cache)


def test_tiny_spec_builds_a_qwen2_directory_that_transformers_loads(random_model):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in random_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    config = AutoConfig.from_pretrained(random_model)
    tokenizer = AutoTokenizer.from_pretrained(random_model)
    model = AutoModelForCausalLM.from_pretrained(random_model)
    assert config.model_type == "qwen2" and config.architectures == ["Qwen2ForCausalLM"]
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    # vLLM-friendly: tied embeddings saved consistently, vocab covers the tokenizer, room to generate
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert config.vocab_size >= len(tokenizer) and config.vocab_size % 64 == 0
    assert config.max_position_embeddings >= 512
    assert (
        config.eos_token_id
        == tokenizer.eos_token_id
        == tokenizer.convert_tokens_to_ids("<|im_end|>")
    )
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    meta = json.loads((random_model / "rlvr_tiny.json").read_text())
    assert meta["recipe"]["task"] == "arithmetic" and meta["recipe"]["warm_start"] is False


def test_resolving_again_reuses_the_cached_build(random_model, cache, capfd):
    capfd.readouterr()
    again = resolve_model(RANDOM_SPEC, cache_dir=cache)
    assert again == random_model
    assert "building" not in capfd.readouterr().err
    assert random_model.name == tiny_model_dir_name(RANDOM_SPEC)
    # seeds and sizes are different builds
    assert tiny_model_dir_name(RANDOM_SPEC + "&seed=1") != random_model.name
    assert tiny_model_dir_name("tiny:arithmetic") != random_model.name


def test_two_processes_racing_build_once(tmp_path):
    code = (
        "import sys; from rlvr.models import resolve_model; "
        f"print(resolve_model({RANDOM_SPEC!r}, cache_dir=sys.argv[1]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    assert sum(err.count("building:") for _, err in outs) == 1
    # the finished directory is all that is left: no temporary build directories
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [
        Path(paths.pop()).name
    ]


def test_a_directory_with_config_json_resolves_to_itself(random_model):
    assert resolve_model(str(random_model)) == random_model.resolve()


def test_a_name_under_the_model_roots_resolves(random_model, monkeypatch):
    monkeypatch.setenv("RLVR_MODEL_ROOTS", str(random_model.parent))
    assert resolve_model(random_model.name) == random_model.resolve()


def test_an_hf_id_resolves_from_the_local_hf_cache_only(random_model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # The hub cache's on-disk layout: models--org--name/{refs/main, snapshots/<commit>/...}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-math"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in random_model.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("acme/tiny-math") == snap
    with pytest.raises(
        ModelNotFoundError,
        match="not a local directory or in the local Hugging Face cache.*HF_HUB_OFFLINE",
    ):
        resolve_model("acme/not-downloaded")


@pytest.mark.parametrize(
    "spec,match",
    [
        ("tiny:chess", "unknown tiny model task 'chess'; known: arithmetic, countdown"),
        ("tiny:arithmetic?size=tpu", "unknown tiny model size 'tpu'"),
        ("tiny:arithmetic?steps=5", "unknown parameter 'steps'"),
        ("tiny:arithmetic?seed=x", "seed must be an integer"),
        ("", "model.path is empty"),
    ],
)
def test_bad_specs_get_a_clear_error(spec, match, tmp_path):
    with pytest.raises(ModelNotFoundError, match=match):
        resolve_model(spec, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was built


def test_a_directory_without_config_json_is_an_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_model_roots_come_from_the_environment(monkeypatch, tmp_path):
    from rlvr.models import default_cache_dir, model_roots

    monkeypatch.delenv("RLVR_MODEL_ROOTS", raising=False)
    monkeypatch.setenv("RLVR_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "models"
    monkeypatch.setenv(
        "RLVR_MODEL_ROOTS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    )
    assert model_roots() == [tmp_path / "a", tmp_path / "b"]
    assert default_cache_dir() == tmp_path / "a"
