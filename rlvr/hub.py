"""The Hugging Face Hub, when one is reachable: models (``model.path: Qwen/Qwen2.5-0.5B-Instruct``)
and datasets (``hf://datasets/openai/gsm8k?config=main&split=train``).

Downloads go through ``huggingface_hub`` / ``datasets`` into their usual cache. Before any
download the Hub is probed once with a short timeout (``RLVR_HUB_TIMEOUT_S``, default 5 s), so
a machine without a network fails in seconds, not after minutes of retries, with an error that
names the local alternative. ``HF_HUB_OFFLINE=1`` means "never reach the Hub"; ``HF_ENDPOINT``
points at a mirror.
"""

from __future__ import annotations

import os

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 5.0
_TRUE = ("1", "true", "yes", "on")


class HubUnreachableError(ConnectionError):
    """The Hub cannot be reached from here (offline mode, no route, DNS...)."""


def endpoint() -> str:
    """The Hub's address: ``HF_ENDPOINT`` (a mirror) or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def timeout_s() -> float:
    """How long the reachability probe may take (``RLVR_HUB_TIMEOUT_S``)."""
    raw = os.environ.get("RLVR_HUB_TIMEOUT_S", "")
    try:
        return min(max(float(raw), 0.1), 60.0) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S


def hub_problem() -> str | None:
    """Why the Hub cannot be reached now (``None``: it answers). Takes at most
    :func:`timeout_s` seconds; any HTTP answer, even an error status, counts as reachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    import httpx

    url = endpoint()
    try:
        httpx.head(url, timeout=timeout_s(), follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"no answer from {url} within {timeout_s():g} s: {type(exc).__name__}: {exc}"
    except ValueError as exc:  # a malformed HF_ENDPOINT
        return f"HF_ENDPOINT {url!r} is not a usable URL ({exc})"
    return None


def require_hub(what: str, alternative: str) -> None:
    """Raise :class:`HubUnreachableError` saying ``what`` needs the Hub and ``alternative``."""
    problem = hub_problem()
    if problem is not None:
        raise HubUnreachableError(
            f"{what} cannot reach the Hugging Face Hub ({problem}); {alternative}"
        )


def download_model(repo_id: str) -> str:
    """A local snapshot of model ``repo_id`` (config, weights, tokenizer), downloaded into the
    Hugging Face cache; :class:`HubUnreachableError` at once when the Hub is not there."""
    require_hub(
        f"{repo_id!r} is not a local directory or in the local Hugging Face cache, and it",
        f"download it where there is a network (huggingface-cli download {repo_id} "
        "--local-dir DIR), copy DIR here and point model.path at the local directory",
    )
    from huggingface_hub import snapshot_download

    return str(
        snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
        )
    )
