"""The job spec: everything a training job needs, as plain pydantic models.

A spec comes from YAML/JSON (``rlvr train spec.yaml``, ``POST /v1/jobs``). Unknown keys are
errors (a typo must not silently fall back to a default), and every numeric field has the
bounds a sane run needs, so a bad spec fails at submission naming the field.

    >>> spec = JobSpec.from_yaml_text(open("examples/arithmetic.yaml").read())
    >>> spec.algorithm.group_size
    8
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SpecError(ValueError):
    """A valid spec that cannot run as written, found when the run starts: its placement on
    the cluster, its model, its data, its verifiers. The message names the field and the
    fix; ``rlvr train`` exits 2 with it, as for a spec that fails validation."""


def no_nul(value: Any) -> Any:
    """A text (or list of texts) with no NUL character: none means anything in a spec, and
    a path holding one makes the OS calls that check it raise (a server error, not a 422)."""
    texts = value if isinstance(value, list) else [value]
    if any(isinstance(t, str) and "\x00" in t for t in texts):
        raise ValueError("must not contain a NUL character (\\x00)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


class LoraSpec(_Strict):
    """Train low-rank adapters (peft) instead of the full model."""

    rank: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class ModelSpec(_Strict):
    """The policy to train: ``tiny:<task>`` (built locally), an HF model id, or a directory."""

    path: str = Field("tiny:arithmetic", min_length=1)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # Recompute each decoder layer's activations in the backward pass: less memory, slower.
    gradient_checkpointing: bool = False
    lora: LoraSpec | None = None
    # The learner's attention kernel; flash_attention_2 needs the flash-attn package.
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    # The learner forwards each distinct prompt of a micro-batch once and the group's
    # completions attend to its cached keys/values: the same logprobs for less work
    # (docs/training.md, "Shared prompt forward"). Off: every row forwards its own prompt.
    share_prompt_forward: bool = True


class CurriculumSpec(_Strict):
    """Prompt choice from per-prompt pass rates (docs/training.md, "Curriculum")."""

    retire_after_solved: int = Field(3, ge=0, le=1000)  # all-pass groups in a row; 0: never
    prefer: Literal["mixed", "hard", "none"] = "mixed"  # which seen prompts to sample more
    revisit_failed_every: int = Field(10, ge=1, le=1_000_000)  # steps before an all-fail returns


class DataSpec(_Strict):
    """Where prompts come from: ``builtin:<name>?k=v`` or a ``.jsonl``/``.parquet`` path."""

    train: str = Field("builtin:arithmetic?n=2000", min_length=1)
    eval: str | None = "builtin:arithmetic?n=200&seed=1"
    # think, plain, model (the tokenizer's own chat template) or a .jinja file's path;
    # prompt_template is its old name (docs/models.md, "Prompt templates").
    template: str = Field("think", min_length=1, max_length=4096)
    system_prompt: str | None = Field(None, max_length=32_768)  # replaces the template's own
    # appended to every user message, e.g. "Reply with just the number." (rlvr/data/chat.py)
    instruction: str | None = Field(None, min_length=1, max_length=4096)
    max_prompt_tokens: int = Field(512, ge=8, le=131072)
    shuffle: bool = True
    curriculum: CurriculumSpec | None = None  # set: prompts chosen from their pass rates

    @model_validator(mode="before")
    @classmethod
    def _old_template_name(cls, data: Any) -> Any:
        """``prompt_template`` (the old name) means ``template``; both at once is an error."""
        if isinstance(data, dict) and "prompt_template" in data:
            data = dict(data)
            old = data.pop("prompt_template")
            if "template" in data and data["template"] != old:
                raise ValueError("give data.template (prompt_template is its old name), not both")
            data["template"] = old
        return data

    @field_validator("template")
    @classmethod
    def _known_template(cls, v: str) -> str:
        from rlvr.data.chat import check_template

        return check_template(v)

    @property
    def prompt_template(self) -> str:
        """The template with the system prompt attached, for :func:`rlvr.data.render_prompt`."""
        from rlvr.data.chat import PromptFormat

        return PromptFormat(self.template, self.system_prompt, self.instruction)


class VerifierRef(_Strict):
    """One reward term: ``weight * verifier(completion, reference).score``."""

    name: str = Field(..., min_length=1)
    weight: float = Field(1.0, ge=-100, le=100)
    options: dict[str, Any] = {}


class RewardSpec(_Strict):
    verifiers: list[VerifierRef] = Field(
        default_factory=lambda: [
            VerifierRef(name="math"),
            VerifierRef(name="think_format", weight=0.1),
        ],
        min_length=1,
    )
    timeout_s: float = Field(10.0, gt=0, le=600)  # per completion, per verifier
    workers: int = Field(2, ge=1, le=64)  # processes in the reward pool


Estimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]
LossAgg = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
RatioLevel = Literal["token", "sequence"]
Objective = Literal["clip", "cispo"]
KlMode = Literal["loss", "reward"]
KlEstimator = Literal["k1", "k2", "k3"]
Sharding = Literal["none", "fsdp"]
SHARDINGS: tuple[str, ...] = ("none", "fsdp")


def sharding_problem(
    sharding: str, num_learners: int, micro_batch_tokens: int | None
) -> str | None:
    """Why learners cannot run ``algorithm.sharding`` with these settings, or None."""
    if sharding not in SHARDINGS:
        return f"algorithm.sharding must be one of {', '.join(SHARDINGS)}, got {sharding!r}"
    if sharding != "fsdp":
        return None
    if num_learners < 2:
        return (
            "algorithm.sharding=fsdp spreads the learner state over the learners: it needs "
            f"algorithm.num_learners >= 2, got {num_learners}"
        )
    if micro_batch_tokens is not None:
        return (
            "algorithm.sharding=fsdp needs every learner to run the same number of "
            "micro-batches: size them by algorithm.micro_batch_size, not micro_batch_tokens"
        )
    return None


class OverlongSpec(_Strict):
    """Completions cut at rollout.max_new_tokens (docs/training.md, "Overlong handling")."""

    mode: Literal["none", "mask", "penalty"] = "none"  # mask: out of the loss; penalty: DAPO's
    buffer_tokens: int = Field(0, ge=0, le=131072)  # penalty: the soft zone before the limit


# algorithm.tis_cap of an asynchronous run (max_staleness > 0) that does not set it.
ASYNC_TIS_CAP = 2.0


class AlgorithmSpec(_Strict):
    """GRPO-family policy gradient. Formulas: docs/design.md, "Loss semantics"."""

    estimator: Estimator = "grpo"
    group_size: int = Field(8, ge=2, le=1024)
    prompts_per_step: int = Field(16, ge=1, le=65536)
    lr: float = Field(1.0e-5, gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    warmup_steps: int = Field(0, ge=0, le=10_000_000)
    max_steps: int = Field(100, ge=1, le=10_000_000)
    clip_low: float = Field(0.2, ge=0, le=1.0)
    clip_high: float = Field(0.28, ge=0, le=10.0)
    kl_coef: float = Field(0.0, ge=0, le=100)
    loss_agg: LossAgg = "token_mean"
    tis_cap: float | None = Field(None, gt=0)
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal
    max_refill_rounds: int = Field(0, ge=0, le=64)  # dynamic_sampling: rounds of new prompts
    ratio_level: RatioLevel = "token"  # sequence: GSPO's length-normalised sequence ratio
    objective: Objective = "clip"  # cispo: clipped, detached IS weight x logprob gradient
    entropy_coef: float = Field(0.0, ge=0, le=10)  # entropy bonus in the loss
    kl_mode: KlMode = "loss"  # reward: -kl_coef*KL folded into the reward (REINFORCE++)
    kl_estimator: KlEstimator = "k3"
    overlong: OverlongSpec = Field(default_factory=OverlongSpec)
    mini_batches: int = Field(1, ge=1, le=1024)  # optimizer steps per rollout batch and epoch
    # Rows with advantage 0 stay out of the learner's forward and backward where that changes
    # no gradient (rlvr.train.update.rows_with_gradient); false: every row is computed, and
    # the learner's token statistics (entropy, mismatch/kl, ...) cover the whole batch.
    skip_zero_advantage_rows: bool = True
    max_grad_norm: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(16, ge=1, le=65536)  # sequences per forward/backward
    # Size micro-batches by padded tokens instead (sequences sorted by length, each micro-batch
    # at most this many rows x columns); replaces micro_batch_size when set.
    micro_batch_tokens: int | None = Field(None, ge=16, le=16_777_216)
    epochs_per_step: int = Field(1, ge=1, le=16)  # optimizer passes over each rollout batch
    num_learners: int = Field(0, ge=0, le=64)  # 0: the learner lives in the driver's actor
    # fsdp: weights, gradients and AdamW state sharded over the learners (FSDP2, needs >= 2);
    # none: every learner holds them in full (DDP). docs/training.md, "Sharded learners".
    sharding: Sharding = "none"
    # Async RL: step s's rollout is sampled up to this many weight versions behind the
    # learner (started while earlier steps learn); 0 = synchronous. docs/design.md, "Async".
    max_staleness: int = Field(0, ge=0, le=8)
    seed: int = Field(0, ge=0, le=2**32 - 1)  # what numpy and torch seeding take

    @model_validator(mode="after")
    def _sharding_runs(self) -> AlgorithmSpec:
        problem = sharding_problem(self.sharding, self.num_learners, self.micro_batch_tokens)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _async_runs_corrected(self) -> AlgorithmSpec:
        # An asynchronous run learns from completions sampled by older weights; without the
        # truncated-IS weight nothing corrects for it, and the demo at max_staleness 1 fell
        # from 60% to 26% eval accuracy by step 10 (docs/training.md, "Async RL"). Unset, it
        # is on; an explicit null keeps it off.
        if self.max_staleness > 0 and "tis_cap" not in self.model_fields_set:
            self.tis_cap = ASYNC_TIS_CAP  # (marks the field set: this runs once)
        return self


class RolloutSpec(_Strict):
    engine: Literal["auto", "hf", "vllm"] = "auto"  # auto: vllm when CUDA and vLLM exist, else hf
    max_new_tokens: int = Field(256, ge=1, le=131072)
    temperature: float = Field(1.0, ge=0, le=10)
    top_p: float = Field(1.0, gt=0, le=1)
    replicas: int = Field(1, ge=1, le=64)
    gpu_memory_utilization: float = Field(0.35, gt=0, le=0.95)
    # GPUs per vLLM engine (tensor parallel); an engine's GPUs are always on one node.
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    stop: list[str] = []
    # An asynchronous run's weight push lands at an engine's next decoding step, also in the
    # middle of sequences, instead of after the rollouts submitted before it (HF and vLLM).
    # docs/training.md, "Weight updates mid-sequence".
    mid_sequence_weight_updates: bool = False


class PlacementSpec(_Strict):
    """Where engines and learners run (``rlvr plan`` shows it; docs/gpu.md).

    On GPUs, ``colocate``: engines and learners share each GPU (an engine takes
    ``rollout.gpu_memory_utilization`` of it); ``split``: rollout GPUs apart from learner
    GPUs; ``auto``: split when the cluster has the GPUs for both, else colocate. GPU counts:
    None = derived (``replicas x tensor_parallel_size``; one GPU per learner).
    On CPUs, ``colocate``: the one engine runs in the driver's process beside the learner
    (``rollout.replicas: 1``, ``algorithm.num_learners: 0``); ``split``: engine actors;
    ``auto``: the driver where it can (an asynchronous run's engine on a thread of its own,
    unless the learner draws LoRA dropout), else actors.
    """

    mode: Literal["auto", "colocate", "split"] = "auto"
    rollout_gpus: int | None = Field(None, ge=1, le=4096)
    learner_gpus: int | None = Field(None, ge=1, le=4096)


class CheckpointSpec(_Strict):
    every: int = Field(50, ge=1, le=10_000_000)
    keep: int = Field(3, ge=1, le=100)  # newest checkpoints kept on disk


MAX_EVAL_SETS = 8
MAX_EVAL_SAMPLES = 64  # completions per prompt (and the largest k)
_SET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


class EvalSpec(_Strict):
    """Evaluation every ``every`` steps (metrics: docs/evaluation.md)."""

    every: int = Field(25, ge=1, le=10_000_000)
    max_new_tokens: int | None = Field(None, ge=1, le=131072)  # default: rollout.max_new_tokens
    at_start: bool = True  # evaluate the initial policy (step 0) too
    # Named eval sets {name: source}, replacing data.eval; metrics eval/<name>/pass@1, ...
    sets: dict[str, str] = Field(default_factory=dict, max_length=MAX_EVAL_SETS)
    samples: int = Field(1, ge=1, le=MAX_EVAL_SAMPLES)  # per prompt; 1 = greedy
    k: list[int] = Field(default_factory=lambda: [1, 8], min_length=1, max_length=8)
    temperature: float = Field(1.0, gt=0, le=10)  # sampling temperature when samples > 1

    @field_validator("sets")
    @classmethod
    def _sets_named(cls, v: dict[str, str]) -> dict[str, str]:
        for name, source in v.items():
            if not _SET_NAME_RE.match(name):
                raise ValueError(
                    f"eval set name {name!r} must be 1-32 letters, digits, '.', '_' or '-'"
                )
            if not source.strip():
                raise ValueError(f"eval set {name!r} needs a data source")
        return v

    @field_validator("k")
    @classmethod
    def _k_bounded(cls, v: list[int]) -> list[int]:
        if any(not 1 <= k <= MAX_EVAL_SAMPLES for k in v):
            raise ValueError(f"every k must be in 1..{MAX_EVAL_SAMPLES} (k > samples is skipped)")
        return sorted(set(v))


_TRACKER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")


def _inside_run_dir(path: str, field: str) -> str:
    """A relative path with no ``..``: trackers writing files stay inside the job's run
    directory (a caller of the service must not choose where the driver writes)."""
    absolute = path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", path)
    if not path or absolute or "\x00" in path:
        raise ValueError(
            f"{field}: a local store must be a relative path inside the run directory "
            f"(e.g. 'mlflow.db'), got {path!r}"
        )
    if ".." in re.split(r"[/\\]", path):
        raise ValueError(f"{field}: '..' may not leave the run directory, got {path!r}")
    return path


class MlflowSpec(_Strict):
    """Log to an MLflow tracking server (or a local SQLite store inside the run directory)."""

    # http(s)://host[:port][/path], or a relative path: an SQLite database in the run dir
    # (e.g. mlflow.db). Credentials go in the driver's MLFLOW_TRACKING_USERNAME/PASSWORD.
    tracking_uri: str = Field(..., min_length=1, max_length=2048)
    experiment: str = Field("rlvr", min_length=1, max_length=128)  # created when missing

    @field_validator("tracking_uri")
    @classmethod
    def _uri_allowed(cls, v: str) -> str:
        field = "logging.mlflow.tracking_uri"
        scheme = v.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", v) else ""
        if scheme in ("http", "https"):
            from urllib.parse import urlsplit

            parts = urlsplit(v)
            if not parts.hostname:
                raise ValueError(f"{field}: {v!r} names no host")
            if parts.username or parts.password:
                raise ValueError(
                    f"{field}: no credentials in the URI (the spec is shown to every reader "
                    "of the job); set MLFLOW_TRACKING_USERNAME/PASSWORD for the driver"
                )
            return v
        if scheme:
            raise ValueError(
                f"{field}: scheme {scheme!r} is not supported: use http(s)://host or a "
                "relative path inside the run directory (an SQLite database, e.g. 'mlflow.db')"
            )
        return _inside_run_dir(v, field)

    @field_validator("experiment")
    @classmethod
    def _experiment_named(cls, v: str) -> str:
        if not _TRACKER_NAME_RE.fullmatch(v):
            raise ValueError("experiment must be 1-128 letters, digits, ' ', '.', '_' or '-'")
        return v


class WandbSpec(_Strict):
    """Weights & Biases, offline: files under <run dir>/wandb; `wandb sync` uploads them."""

    project: str = Field(..., min_length=1, max_length=128)
    mode: Literal["offline"] = "offline"  # the service never uploads; syncing is the user's

    @field_validator("project")
    @classmethod
    def _project_named(cls, v: str) -> str:
        if not _TRACKER_NAME_RE.fullmatch(v) or " " in v:
            raise ValueError("project must be 1-128 letters, digits, '.', '_' or '-'")
        return v


class LoggingSpec(_Strict):
    """Experiment trackers the run also reports to (beside the run dir and the job store);
    a tracker that fails is warned about and counted, never fails the run."""

    tensorboard: bool = False  # event files under <run dir>/tensorboard
    mlflow: MlflowSpec | None = None
    wandb: WandbSpec | None = None


class ToolMarkersSpec(_Strict):
    """The strings around a tool call and its output (docs/tools.md, "Protocol")."""

    call_open: str = Field('<tool name="{name}">', min_length=1, max_length=256)  # {name}: tool
    call_close: str = Field("</tool>", min_length=1, max_length=256)  # the stop string of a turn
    output_open: str = Field("<output>", min_length=1, max_length=256)
    output_close: str = Field("</output>", min_length=1, max_length=256)

    @field_validator("call_open")
    @classmethod
    def _one_name(cls, v: str) -> str:
        if v.count("{name}") > 1:
            raise ValueError("tools.markers.call_open may contain {name} at most once")
        return v


class ToolsSpec(_Strict):
    """Tools the model may call mid-generation (docs/tools.md); none enabled: one turn.

    The whole completion, model and tool tokens, stays within rollout.max_new_tokens.
    """

    enabled: list[str] = Field(default_factory=list, max_length=16)  # python, calculator, ...
    max_turns: int = Field(4, ge=1, le=64)  # model turns per completion
    max_output_tokens: int = Field(256, ge=1, le=32768)  # per tool output (cut with a marker)
    timeout_s: float = Field(10.0, gt=0, le=300)  # per call
    workers: int = Field(4, ge=1, le=256)  # calls run at once per engine (the sandbox slots)
    markers: ToolMarkersSpec = Field(default_factory=ToolMarkersSpec)

    @field_validator("enabled")
    @classmethod
    def _known_tools(cls, v: list[str]) -> list[str]:
        from rlvr.tools.registry import tool_names

        known = tool_names()
        for name in v:
            if name not in known:
                raise ValueError(
                    f"tools.enabled: unknown tool {name!r}; known tools: {', '.join(known)}"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"tools.enabled lists a tool twice: {v}")
        return v


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class JobSpec(_Strict):
    """A training job. Every field, with its default and bounds: docs/design.md, "Job spec"."""

    name: str = "job"
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    reward: RewardSpec = RewardSpec()
    algorithm: AlgorithmSpec = AlgorithmSpec()
    rollout: RolloutSpec = RolloutSpec()
    placement: PlacementSpec = PlacementSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    eval: EvalSpec = EvalSpec()
    logging: LoggingSpec = LoggingSpec()
    tools: ToolsSpec = ToolsSpec()

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):  # match() would accept "evil\n" ($ before a newline)
            raise ValueError(
                "name must be 1-64 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.algorithm.clip_low >= 1.0:
            raise ValueError(
                "algorithm.clip_low must be < 1 (the ratio's lower bound is 1 - clip_low)"
            )
        a = self.algorithm
        if a.kl_mode == "reward" and not a.estimator.startswith("reinforce_pp"):
            raise ValueError(
                "algorithm.kl_mode='reward' folds the KL into REINFORCE++'s token rewards; "
                "use estimator reinforce_pp or reinforce_pp_baseline, or kl_mode='loss'"
            )
        if a.overlong.mode == "penalty" and a.overlong.buffer_tokens > self.rollout.max_new_tokens:
            raise ValueError("algorithm.overlong.buffer_tokens must be <= rollout.max_new_tokens")
        if a.mini_batches > a.prompts_per_step * a.group_size:
            raise ValueError(
                f"algorithm.mini_batches={a.mini_batches} exceeds the batch "
                f"({a.prompts_per_step * a.group_size} sequences); lower it"
            )
        if self.rollout.mid_sequence_weight_updates and a.max_staleness == 0:
            raise ValueError(
                "rollout.mid_sequence_weight_updates needs algorithm.max_staleness >= 1: a "
                "synchronous run's engines are idle when new weights arrive"
            )
        m = self.tools.markers
        if len(self.tools.enabled) > 1 and "{name}" not in m.call_open:
            raise ValueError(
                "tools.markers.call_open needs {name} when more than one tool is enabled "
                "(which tool a call is for)"
            )
        if self.eval.sets and self.data.eval is not None:  # eval.sets replace data.eval
            if "eval" in self.data.model_fields_set:
                raise ValueError("give the eval sets in eval.sets or data.eval, not both")
            self.data.eval = None
        return self

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def from_yaml_text(cls, text: str) -> JobSpec:
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("a job spec must be a YAML/JSON mapping at the top level")
        return cls.model_validate(data)

    @classmethod
    def from_file(cls, path: str | Path) -> JobSpec:
        return cls.from_yaml_text(Path(path).read_text())

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)
