"""Models: where ``model.path`` points, and the tiny models built locally.

    >>> from rlvr.models import resolve_model
    >>> path = resolve_model("tiny:arithmetic")   # built once (~1 min on 2 cores), then cached
    >>> AutoModelForCausalLM.from_pretrained(path); AutoTokenizer.from_pretrained(path)

:mod:`rlvr.models.causal_lm` is how the learner and the engines run an HF causal LM (the
precision policy, LoRA, token logprobs); it imports torch, so it is not re-exported here.
Importing this package is cheap (torch and transformers load only when a model is built).
"""

from rlvr.models.resolve import (
    ModelNotFoundError,
    default_cache_dir,
    model_roots,
    resolve_model,
    tiny_model_dir_name,
)
from rlvr.models.tiny import TASKS, build_tiny_model

__all__ = [
    "TASKS",
    "ModelNotFoundError",
    "build_tiny_model",
    "default_cache_dir",
    "model_roots",
    "resolve_model",
    "tiny_model_dir_name",
]
