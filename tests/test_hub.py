"""The Hugging Face Hub when it is not reachable (as on an offline machine): a Hub model name
or an ``hf://datasets/...`` source fails in seconds with an error that names the field and the
local alternative. The Hub is made unreachable for real: HF_ENDPOINT on a closed local port,
or HF_HUB_OFFLINE=1."""

from __future__ import annotations

import socket

import pytest

from rlvr.data import DataError, load_prompts, validate_source
from rlvr.data.sources import parse_hf
from rlvr.models import ModelNotFoundError, resolve_model

MODEL = "rlvr-test-org/not-cached-model-0"  # never in any local cache
GSM8K = "hf://datasets/openai/gsm8k?config=main&split=train"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: connections are refused


@pytest.fixture(params=["closed-endpoint", "offline"])
def no_hub(request, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("RLVR_HUB_TIMEOUT_S", "3")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if request.param == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        return "HF_HUB_OFFLINE is set"
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    return "no answer from http://127.0.0.1:"


def test_a_hub_model_without_a_hub_names_the_local_directory_alternative(no_hub):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(MODEL)
    msg = str(err.value)
    assert "cannot reach the Hugging Face Hub" in msg and no_hub in msg
    assert f"huggingface-cli download {MODEL}" in msg
    assert "point model.path at the local directory" in msg


def test_the_trainer_names_the_field(no_hub):
    from rlvr.train.loop import _resolve_model

    with pytest.raises(ValueError, match=r"^model\.path: .*cannot reach the Hugging Face Hub"):
        _resolve_model(MODEL)


def test_a_hub_dataset_without_a_hub_names_the_local_file_alternative(no_hub):
    with pytest.raises(DataError) as err:
        load_prompts(GSM8K)
    msg = str(err.value)
    assert msg.startswith(GSM8K) and "cannot reach the Hugging Face Hub" in msg and no_hub in msg
    assert "save a split as .jsonl or .parquet" in msg


def test_hub_dataset_sources_are_parsed_and_checked():
    assert parse_hf(GSM8K) == ("openai/gsm8k", {"config": "main", "split": "train"})
    assert parse_hf("hf://datasets/openai/gsm8k") == ("openai/gsm8k", {"split": "train"})
    with pytest.raises(DataError, match="'subset': unknown parameter; takes config, split"):
        parse_hf("hf://datasets/openai/gsm8k?subset=main")
    with pytest.raises(DataError, match="needs a dataset id"):
        parse_hf("hf://datasets/../etc?split=train")


def test_the_service_reads_no_hub_dataset(tmp_path):
    """With data roots (the service), hf:// is refused before any network is tried."""
    with pytest.raises(DataError, match="data roots only, not the Hugging Face Hub"):
        validate_source(GSM8K, [tmp_path])


def test_the_service_refuses_an_uncached_hub_model_naming_the_model_roots(tmp_path, monkeypatch):
    """The service's policy: models come from its model roots or its local HF cache, never
    downloaded by a submission (a download is a CLI user's choice)."""
    from rlvr.api.settings import Settings
    from rlvr.api.validation import check_spec
    from rlvr.config import JobSpec

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    settings = Settings(data_roots=[tmp_path], model_roots=[tmp_path], runs_dir=tmp_path / "r")
    _, errors = check_spec(JobSpec.model_validate({"model": {"path": MODEL}}), settings)
    (err,) = [e for e in errors if e["loc"] == ["body", "model", "path"]]
    assert "not in the local Hugging Face cache" in err["msg"] and "RLVR_MODEL_ROOTS" in err["msg"]
