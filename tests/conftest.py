"""Shared fixtures: one small local Ray cluster per test session, GPU/docker skips, a small
random model for the engine and learner tests."""

from __future__ import annotations

import json
import os
import signal
import string
import time
import uuid
from pathlib import Path

import psutil
import pytest
from docker_engine import docker_engine  # noqa: F401  (session fixture of the docker tests)

from rlvr.models.tiny import CHAT_TEMPLATE, IM_END, IM_START, MARKUP_TOKENS, PAD

# Set for this run at its start; every process the run starts inherits it (Ray heads, their
# workers and job drivers, `rlvr serve`), which is how the session-end check finds them.
SESSION_ENV = "RLVR_TEST_SESSION"


def pytest_configure(config):
    os.environ[SESSION_ENV] = uuid.uuid4().hex


def processes_mentioning(*needles: str) -> list[psutil.Process]:
    """Live processes (this one excluded) with any of ``needles`` in their command line or
    in the value of an environment variable (a job id, a db URL, a temp directory). The
    whole process table, not one process group: Ray runs each job driver in its own session."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["pid"] == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            text = " ".join(p.info["cmdline"] or ())
            if any(n in text for n in needles) or any(
                n in v for v in p.environ().values() for n in needles
            ):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.fixture(name="processes_mentioning")
def _processes_mentioning():
    """:func:`processes_mentioning`, for tests that check what a stop left running."""
    return processes_mentioning


def _left_behind(session_id: str, basetemp: str | None) -> list[psutil.Process]:
    """Processes of this run that outlive its tests: ``RLVR_TEST_SESSION`` of this run in
    their environment, or the run's temp directory on their command line or as their working
    directory (sandboxed programs get a cleared environment). Verifier pool workers that are
    this process's own children end with it (atexit) and are not counted, nor is the
    standard library's resource tracker a "spawn" process left (it ends with its parent)."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "ppid", "cmdline", "status"]):
        if p.info["pid"] == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(p.info["cmdline"] or ())
        if p.info["ppid"] == me and (
            "verifiers._worker" in cmdline or "multiprocessing.resource_tracker" in cmdline
        ):
            continue
        try:
            ours = p.environ().get(SESSION_ENV) == session_id
            if not ours and basetemp:  # with its "/": pytest-4 is not pytest-41
                ours = basetemp + os.sep in cmdline or (p.cwd() + os.sep).startswith(
                    basetemp + os.sep
                )
        except psutil.Error:
            continue
        if ours:
            found.append(p)
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the run, naming them, if processes it started are still running at its end (a
    leaked Ray head, job driver, `rlvr serve` or sandbox); they are then killed."""
    session_id = os.environ.get(SESSION_ENV)
    if not session_id or exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = str(factory.getbasetemp()) if factory and factory._basetemp else None
    deadline = time.monotonic() + 15.0  # what is shutting down right now gets to finish
    while (left := _left_behind(session_id, basetemp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    lines = []
    for p in left:
        try:
            lines.append(f"  pid {p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:300]}")
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue
    message = f"{len(lines)} process(es) started by this test run outlived it:\n"
    message += "\n".join(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "leftover processes", red=True)
        reporter.write_line(message)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA (runs on a GPU machine)")
    has_cuda = _has_cuda()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by the tests that need one (2 CPUs, no dashboard)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024 * 1024,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


# -- the service's tests (tests/jobs, tests/browser): a Ray head with the Jobs API ----------
@pytest.fixture(scope="session")
def ray_head():
    """``ray start --head`` on loopback with token auth, as the service starts its own."""
    from rlvr.jobs.runner import LocalRayHead

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    head = LocalRayHead(num_cpus=2, object_store_mb=512)
    head.start()
    yield head
    head.stop()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """A model root holding a random-weight tiny:arithmetic model (seconds to build)."""
    from rlvr.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    build_tiny_model("arithmetic", root / "arith", warm_start=False)
    return root


@pytest.fixture(scope="session")
def tiny_spec(model_root):
    """``tiny_spec(name=..., max_steps=...)``: a job spec dict for the prebuilt tiny model."""
    return lambda **kw: make_tiny_spec(model_root / "arith", **kw)


def make_tiny_spec(
    model_dir,
    *,
    name: str = "svc",
    max_steps: int = 4,
    every: int = 2,
    max_new_tokens: int = 16,
    **algorithm,
) -> dict:
    """A training job small enough for a test: 2 prompts x 2 completions of 16 tokens."""
    return {
        "name": name,
        "model": {"path": str(model_dir)},
        "data": {"train": "builtin:arithmetic?n=64", "eval": "builtin:arithmetic?n=16&seed=1"},
        "reward": {
            "verifiers": [{"name": "math"}, {"name": "think_format", "weight": 0.1}],
            "workers": 1,
        },  # fmt: skip
        "algorithm": {
            "group_size": 2,
            "prompts_per_step": 2,
            "max_steps": max_steps,
            "lr": 1e-4,
            "micro_batch_size": 4,
            **algorithm,
        },  # fmt: skip
        "rollout": {"engine": "hf", "max_new_tokens": max_new_tokens},
        "checkpoint": {"every": every},
        "eval": {"every": every, "max_new_tokens": 16},
    }


# -- engine and learner tests (tests/rollout, tests/train): a small random Qwen2 ---------------
# Built in a temp directory once per session (a few seconds), so those tests do not depend on
# the tiny-model builder's warm start. The chat template and special tokens are the product's
# tiny models' own (rlvr.models.tiny); a character-level tokenizer keeps the vocabulary small.
SPECIALS = [PAD, IM_START, IM_END, *MARKUP_TOKENS]


def build_random_model(out: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A random Qwen2 causal LM + character-level tokenizer saved as an HF directory."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for c in sorted(set(string.digits + string.ascii_letters + " +-*/=()<>.,:?!\n_'\"[]{}#%&;|")):
        vocab.setdefault(c, len(vocab))
    vocab["<unk>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.add_special_tokens(SPECIALS)
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    cfg_file = out / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_file.write_text(json.dumps(cfg))
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    return build_random_model(tmp_path_factory.mktemp("random_qwen2"))


@pytest.fixture
def forward_shapes(monkeypatch):
    """``spy(model)``: a list that receives the ``input_ids`` shape of every forward of
    ``model``'s class from then on (the calls still run)."""
    import functools

    def spy(model) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        forward = type(model).forward

        @functools.wraps(forward)  # the signature stays visible (cache_kwarg reads it)
        def recording(self, *args, **kwargs):
            shapes.append(tuple(kwargs["input_ids"].shape))
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(type(model), "forward", recording)
        return shapes

    return spy
