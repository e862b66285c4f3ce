"""Tiny reasoning models built from scratch on this machine (there is no model hub here).

``build_tiny_model("arithmetic", out_dir)`` writes a real Hugging Face model directory:

1. a byte-level BPE tokenizer trained with ``tokenizers`` on the task's text (every byte
   is in the alphabet, so any prompt encodes; digits are split one per token), with the
   chat special tokens ``<|im_start|>``, ``<|im_end|>`` (= eos), ``<|endoftext|>`` (= pad),
   the markup tokens ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` and a
   Qwen-style chat template;
2. a Qwen2-architecture ``transformers`` model (0.44M parameters for ``size="cpu"``,
   25M for ``size="gpu"``), saved with ``save_pretrained`` (safetensors) so that
   transformers and vLLM both load it;
3. a supervised warm start on worked solutions (``<think>`` column arithmetic
   ``</think><answer>…</answer>``) that stops as soon as greedy accuracy on a validation
   slice of the problem space lands in 52-60%: RL then starts from a policy that is right
   about half the time, the regime in which GRPO improves fastest (docs/design.md, "Tiny
   models"). Deterministic in ``seed`` on a given machine.

Why 2 layers, and what the builds measured: docs/models.md.

The recipe and what the warm start measured are written to ``rlvr_tiny.json`` beside the
weights. Use :func:`rlvr.models.resolve_model` (``"tiny:arithmetic"``) to build once and
cache.
"""

from __future__ import annotations

import ast
import copy
import json
import operator
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlvr.data import arithmetic, countdown
from rlvr.data.records import WARM_START_VALID_BUCKET, PromptRecord, split_bucket
from rlvr.data.templates import build_messages, render_prompt

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
MARKUP_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

# Qwen-style ChatML: <|im_start|>role\ncontent<|im_end|>\n ... then <|im_start|>assistant\n
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

TASKS = ("arithmetic", "countdown")
SIZES = ("cpu", "gpu")


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 1024


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that decides what a build produces (its hash keys the cache)."""

    task: str
    size: str = "cpu"
    seed: int = 0
    warm_start: bool = True
    vocab_size: int = 384  # BPE target; the embedding is padded to a multiple of 64
    shape: ModelShape = ModelShape(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=384)
    task_params: dict[str, Any] = field(default_factory=dict)  # for the data generator
    lr: float = 2e-3
    batch_size: int = 16
    max_steps: int = 1500
    eval_every: int = 25
    eval_below_loss: float = 0.3  # accuracy is ~0 before the loss gets here: skip those evals
    accuracy_band: tuple[float, float] = (0.52, 0.60)  # stop when validation accuracy lands here
    valid_size: int = 256
    max_new_tokens: int = 64


def default_recipe(
    task: str, *, size: str = "cpu", seed: int = 0, warm_start: bool = True
) -> TinyRecipe:
    """The recipe of ``tiny:<task>``."""
    if task not in TASKS:
        raise ValueError(f"unknown tiny model task {task!r}; known: {', '.join(TASKS)}")
    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; known: {', '.join(SIZES)}")
    kw: dict[str, Any] = {"task": task, "size": size, "seed": seed, "warm_start": warm_start}
    if task == "arithmetic":
        kw["task_params"] = {"digits": 2, "ops": "+"}
    else:
        # The +/- game: with * and / a 0.44M model spends its budget learning times tables.
        kw["task_params"] = {"numbers": 3, "max_number": 20, "max_target": 100, "ops": "+-"}
        kw["accuracy_band"] = (0.30, 0.45)  # a search problem: a tiny model stays weaker here
        kw["eval_every"] = 50
    if size == "gpu":
        kw["shape"] = ModelShape(hidden=512, layers=8, heads=8, kv_heads=4, intermediate=1536)
        kw["lr"] = 5e-4
        kw["vocab_size"] = 512
    return TinyRecipe(**kw)


# -- problems ----------------------------------------------------------------------------------
def _problems(recipe: TinyRecipe) -> tuple[list, list]:
    """(train, valid) problems from the ``train`` split; the ``test`` split is never seen."""
    pool: list[Any]
    if recipe.task == "arithmetic":
        pool = arithmetic.generate(20_000, seed=recipe.seed, split="train", **recipe.task_params)
    else:
        pool = countdown.generate(
            20_000, seed=recipe.seed, split="train", allow_fewer=True, **recipe.task_params
        )
    pool = list({p.key: p for p in pool}.values())  # distinct
    valid = [p for p in pool if split_bucket(p.key) == WARM_START_VALID_BUCKET]
    train = [p for p in pool if split_bucket(p.key) != WARM_START_VALID_BUCKET]
    return train, valid[: recipe.valid_size]


def _chat_text(prompt: str) -> str:
    """The ``think``-template prompt, rendered exactly as CHAT_TEMPLATE renders it."""
    msgs = build_messages(prompt, "think")
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in msgs) + (
        f"{IM_START}assistant\n"
    )


# -- tokenizer ---------------------------------------------------------------------------------
def train_tokenizer(texts: Sequence[str], vocab_size: int = 384) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``, with chat markup."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one per token (as in Qwen/Llama): column arithmetic stays learnable.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is dropped
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # Markup is not "special": decode(skip_special_tokens=True) keeps it (as Qwen3 does).
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        model_max_length=1024,
        padding_side="left",  # generation pads on the left
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


# -- model ---------------------------------------------------------------------------------------
def _new_model(recipe: TinyRecipe, tokenizer):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    s = recipe.shape
    vocab = -(-len(tokenizer) // 64) * 64
    eos, pad = tokenizer.convert_tokens_to_ids([IM_END, PAD])
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=s.max_positions,
        rope_theta=10_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(recipe.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, bos_token_id=None, do_sample=False
    )
    return model


def _encode_example(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[bool]]:
    """Token ids of prompt + completion + eos, and which of them are trained (the completion)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return p + c + [tokenizer.eos_token_id], [False] * len(p) + [True] * (len(c) + 1)


def _sft_batch(examples: Sequence[tuple[list[int], list[bool]]], pad_id: int):
    """Right-padded ids, attention mask and labels; the loss only on tokens marked trained
    (a completion; for ``tiny:tools`` not the tool's output inside it)."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, train) in enumerate(examples):
        row = torch.tensor(ids)
        input_ids[i, : len(ids)] = row
        labels[i, : len(ids)] = torch.where(torch.tensor(train), row, torch.tensor(-100))
        mask[i, : len(ids)] = 1
    return input_ids, mask, labels


def greedy_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 256,
) -> list[str]:
    """Greedy completions (KV-cached ``generate``) of already-rendered prompt texts."""
    import torch

    was_training = model.training
    model.eval()
    out: list[str] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(
                list(prompts[i : i + batch_size]),
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,
            )
            enc = {k: v.to(model.device) for k, v in enc.items()}
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    model.train(was_training)
    return out


def _answer_of(completion: str) -> str | None:
    from verifiers.base import answer_tag, split_think

    return answer_tag(split_think(completion)[1])


def _is_correct(task: str, completion: str, reference: Any) -> bool:
    """Strict check used to steer the warm start (the verifiers score training)."""
    answer = _answer_of(completion)
    if answer is None:
        return False
    if task == "arithmetic":
        return answer.replace(",", "").strip() == str(reference)
    return _countdown_ok(answer, reference)


def _countdown_ok(expr: str, reference: dict) -> bool:
    """``expr`` uses the reference's numbers (each at most once) and makes its target."""
    used: list[int] = []

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
            return _BIN_OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("not + - * / of integers")

    try:
        value = ev(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return False
    unused = Counter(reference["numbers"])
    unused.subtract(used)  # each number at most once, as the countdown verifier's default
    return min(unused.values(), default=0) >= 0 and abs(value - reference["target"]) < 1e-9


_BIN_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def greedy_accuracy(
    model: Any,
    tokenizer: Any,
    task: str,
    records: Sequence[PromptRecord],
    *,
    max_new_tokens: int = 64,
) -> float:
    """Fraction of ``records`` answered exactly right by greedy decoding (``think`` template)."""
    prompts = [render_prompt(tokenizer, r, "think") for r in records]
    completions = greedy_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    right = sum(
        _is_correct(task, c, r.reference) for c, r in zip(completions, records, strict=True)
    )
    return right / max(1, len(records))


def _log(task: str, msg: str) -> None:
    print(f"[tiny:{task}] {msg}", file=sys.stderr, flush=True)


@dataclass
class _Landing:
    """When to stop the warm start: as soon as validation accuracy is in ``[low, high]``.

    After each evaluation, :meth:`decide` says ``"stop"``, ``"snapshot"`` (below the band:
    keep this state and go on) or ``"back"`` (jumped past the band: return to the snapshot
    and evaluate twice as often from there, down to every step; then stop wherever it is).
    """

    low: float
    high: float
    every: int
    _have_snapshot: bool = False

    def decide(self, accuracy: float) -> str:
        if self.low <= accuracy <= self.high:
            return "stop"
        if accuracy < self.low:
            self._have_snapshot = True
            return "snapshot"
        if self._have_snapshot and self.every > 1:
            self.every = max(1, self.every // 2)
            return "back"
        return "stop"


def _warm_start(model, tokenizer, recipe: TinyRecipe, train: list, valid: list) -> dict[str, Any]:
    """Supervised fine-tune on worked solutions, stopped when validation accuracy is in band.

    Accuracy can jump past the band between two evaluations; then training goes back to
    the last evaluated state (below the band) and goes on evaluating twice as often, so it
    lands in the band instead of overshooting it. Deterministic in ``recipe.seed``.
    """
    import torch

    t0 = time.monotonic()
    rng = random.Random(recipe.seed)
    device = next(model.parameters()).device
    examples = [
        _encode_example(tokenizer, render_prompt(tokenizer, p.prompt(), "think"), p.completion())
        for p in train
    ]
    valid_records = [p.to_record(str(i)) for i, p in enumerate(valid)]
    low, high = recipe.accuracy_band
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = min(50, recipe.max_steps // 10)
    for group in opt.param_groups:
        group["lr"] = recipe.lr / warmup
    landing = _Landing(low, high, recipe.eval_every)
    below: tuple[dict, dict, int] = ({}, {}, 0)  # (weights, optimizer, step) of the last eval < low
    order: list[int] = []
    history: list[tuple[int, float]] = []
    step, acc, loss_ema = 0, 0.0, float("inf")
    model.train()
    while step < recipe.max_steps:
        if len(order) < recipe.batch_size:  # epochs in a seeded random order
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = order[: recipe.batch_size], order[recipe.batch_size :]
        input_ids, mask, labels = _sft_batch([examples[i] for i in batch], tokenizer.pad_token_id)
        loss = model(
            input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
        ).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        for group in opt.param_groups:  # linear warmup, then constant
            group["lr"] = recipe.lr * min(1.0, (step + 1) / warmup)
        loss_ema = loss.item() if loss_ema == float("inf") else 0.9 * loss_ema + 0.1 * loss.item()
        if step % landing.every or loss_ema > recipe.eval_below_loss:
            continue
        acc = greedy_accuracy(
            model, tokenizer, recipe.task, valid_records, max_new_tokens=recipe.max_new_tokens
        )
        history.append((step, acc))
        _log(
            recipe.task,
            f"warm start step {step}: loss {loss_ema:.3f}, validation accuracy {acc:.1%} "
            f"({time.monotonic() - t0:.0f}s)",
        )
        decision = landing.decide(acc)
        if decision == "stop":
            break
        if decision == "snapshot":
            below = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), step)
        else:  # "back": overshot the band; resume from the last state below it
            model.load_state_dict(below[0])
            opt.load_state_dict(below[1])
            _log(
                recipe.task,
                f"past the band: back to step {below[2]}, evaluating every {landing.every}",
            )
    else:  # out of steps: report the accuracy of what is saved
        if not history or history[-1][0] != step:
            acc = greedy_accuracy(
                model, tokenizer, recipe.task, valid_records, max_new_tokens=recipe.max_new_tokens
            )
        _log(recipe.task, f"warm start used all {step} steps: validation accuracy {acc:.1%}")
    return {
        "steps": step,
        "valid_accuracy": acc,
        "valid_size": len(valid_records),
        "accuracy_band": [low, high],
        "train_problems": len(examples),
        "history": history,
        "seconds": round(time.monotonic() - t0, 1),
    }


def build_tiny_model(
    task: str, out_dir: Path, *, seed: int = 0, warm_start: bool = True, size: str = "cpu"
) -> Path:
    """Build ``tiny:<task>`` into ``out_dir`` (created) and return it.

    Args:
        task: ``"arithmetic"`` (2-digit addition) or ``"countdown"`` (3 numbers).
        out_dir: where ``config.json``, ``model.safetensors``, the tokenizer files and
            ``rlvr_tiny.json`` (recipe + warm-start report) are written.
        seed: seeds the data, the initial weights and the warm start.
        warm_start: ``False`` leaves the weights random (for tests of plumbing).
        size: ``"cpu"`` (0.44M parameters) or ``"gpu"`` (~25M parameters; the warm start
            runs on CUDA when present). Build times: docs/models.md.

    Progress goes to stderr.
    """
    return build_from_recipe(
        default_recipe(task, size=size, seed=seed, warm_start=warm_start), Path(out_dir)
    )


def build_from_recipe(recipe: TinyRecipe, out_dir: Path) -> Path:
    import torch

    t0 = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, valid = _problems(recipe)
    corpus = [_chat_text(p.prompt()) + p.completion() + IM_END for p in train[:4000]]
    tokenizer = train_tokenizer(corpus, recipe.vocab_size)
    model = _new_model(recipe, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    _log(
        recipe.task,
        f"building: {n_params / 1e6:.2f}M-parameter Qwen2, vocabulary {len(tokenizer)}, "
        f"{len(train)} training problems",
    )
    report: dict[str, Any] = {"parameters": n_params}
    if recipe.warm_start:
        device = "cuda" if recipe.size == "gpu" and torch.cuda.is_available() else "cpu"
        if recipe.size == "gpu" and device == "cpu":
            _log(recipe.task, "no CUDA here: the gpu-size warm start runs on the CPU (slow)")
        # cpu size, one thread: these matrices are too small to split well, and on a busy
        # machine a second thread spin-waits (docs/models.md). The result does not depend on
        # the thread count.
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if recipe.size == "cpu" else threads)
        try:
            report["warm_start"] = _warm_start(model.to(device), tokenizer, recipe, train, valid)
        finally:
            torch.set_num_threads(threads)
            model.to("cpu")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    report["seconds"] = round(time.monotonic() - t0, 1)
    meta = {"recipe": asdict(recipe), "report": report}
    (out_dir / "rlvr_tiny.json").write_text(json.dumps(meta, indent=2) + "\n")
    _log(recipe.task, f"built {out_dir} in {report['seconds']}s")
    return out_dir
