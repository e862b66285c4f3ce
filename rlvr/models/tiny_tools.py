"""``tiny:tools``: a tiny model that can answer with the calculator, and sometimes does.

The demo of learned tool use (docs/tools.md, "Demo"). The task is 3-digit × 3-digit
multiplication (``builtin:arithmetic?digits=3&ops=*``): a 0.44M-parameter model cannot do
it in its head, but it can copy the two numbers into a calculator call and copy the
result into its answer. The warm start is supervised on a mix of two kinds of reply to
``What is 123 * 456?`` (``plain`` template):

* a call (``tool_frac`` of the examples), exactly as the rollout protocol writes it
  (:mod:`rlvr.tools.protocol`, default markers)::

      <tool name="calculator">123*456</tool><output>56088
      </output>
      <answer>56088</answer>

  The ``<output>…</output>`` block is the tool's, appended by the rollout: it is context,
  not an action, so the warm start's loss masks it out, as the RL loss does
  (``Completion.model_mask``).
* a direct answer (the rest): ``<answer>56088</answer>``, which the model mostly gets
  wrong: it never learns six-digit products this way.

So after the warm start the model calls the tool in about ``tool_frac`` of its samples and
answers directly (mostly wrongly) otherwise; greedy decoding takes the likelier start
(the direct answer). GRPO rewards the calls and the call rate rises; once a call is the
likelier start, greedy accuracy jumps. The warm start stops as soon as replies that call
the tool are right on ``tool_accuracy`` of a validation slice (the tool actually runs).

The tool's four markers are added tokens (one token each), so the decision to call is one
token and the ``</tool>`` stop string ends a turn on a token boundary. The build reuses
:mod:`rlvr.models.tiny` (tokenizer, Qwen2 shape) without changing the other tiny models'
recipes or cache keys. Measured builds: docs/models.md.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlvr.data import arithmetic
from rlvr.data.records import WARM_START_VALID_BUCKET, PromptRecord, split_bucket
from rlvr.data.templates import build_messages, render_prompt
from rlvr.models import tiny
from rlvr.tools.calculator import CalculatorTool
from rlvr.tools.protocol import Markers, Protocol

TOOL = "calculator"
MARKERS = Markers()  # the protocol's defaults: what a job with `tools.enabled: [calculator]` uses
CALL_OPEN = MARKERS.call_open.replace("{name}", TOOL)
TOOL_TOKENS = (CALL_OPEN, MARKERS.call_close, MARKERS.output_open, MARKERS.output_close)

# A reply as (text, is_model) segments: tool output is not the model's.
Segments = list[tuple[str, bool]]


@dataclass(frozen=True)
class ToolsRecipe:
    """Everything that decides what a ``tiny:tools`` build produces (its hash keys the cache)."""

    task: str = "tools"
    size: str = "cpu"
    seed: int = 0
    warm_start: bool = True
    vocab_size: int = 384
    shape: tiny.ModelShape = tiny.ModelShape(
        hidden=128, layers=2, heads=4, kv_heads=2, intermediate=384
    )
    digits: int = 3  # both factors
    tool_frac: float = 0.3  # share of warm-start replies that call the calculator
    template: str = "plain"
    lr: float = 2e-3
    batch_size: int = 32
    max_steps: int = 2000
    eval_every: int = 50  # stage 1: greedy accuracy through the tool, every this many steps
    tool_accuracy: float = 0.8  # stage 1 ends once replies through the tool are this accurate
    call_band: tuple[float, float] = (0.2, 0.4)  # stage 2 ends once P(call) is at most the top
    mix_min_steps: int = 50
    mix_lr: float = 1e-3  # stage 2
    valid_size: int = 128
    max_new_tokens: int = 40


def default_recipe(*, size: str = "cpu", seed: int = 0, warm_start: bool = True) -> ToolsRecipe:
    """The recipe of ``tiny:tools`` (CPU size only)."""
    if size != "cpu":
        raise ValueError(f"tiny:tools is built at size 'cpu' only, not {size!r}")
    return ToolsRecipe(seed=seed, warm_start=warm_start)


# -- replies -----------------------------------------------------------------------------------
def tool_reply(p: arithmetic.ArithmeticProblem) -> Segments:
    """The reply that calls the calculator and copies its result."""
    protocol = Protocol(MARKERS)
    return [
        (f"{CALL_OPEN}{p.a}{p.op}{p.b}{MARKERS.call_close}", True),
        (protocol.wrap_output(str(p.answer)), False),
        (f"\n<answer>{p.answer}</answer>", True),
    ]


def direct_reply(p: arithmetic.ArithmeticProblem) -> Segments:
    """The reply that answers at once (right in the data, mostly wrong from the model)."""
    return [(f"<answer>{p.answer}</answer>", True)]


def encode_reply(
    tokenizer: Any, prompt: str, reply: Segments, eos: bool = True
) -> tuple[list[int], list[bool]]:
    """Token ids of prompt + reply (+ eos), and which of them the loss trains on.

    Each segment is tokenized on its own, as the rollout tokenizes a turn and the tool's
    output; the prompt and the tool output are masked out, eos is the model's.
    """
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    train = [False] * len(ids)
    for text, is_model in reply:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += seg
        train += [is_model] * len(seg)
    if not eos:
        return ids, train
    return [*ids, tokenizer.eos_token_id], [*train, True]


# -- greedy replies with the tool running ------------------------------------------------------
def _greedy(model: Any, contexts: list[list[int]], stop_ids: list[int], pad_id: int, n: int):
    import torch

    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for i, c in enumerate(contexts):  # left-padded: generation continues at the right edge
        ids[i, width - len(c) :] = torch.tensor(c)
        mask[i, width - len(c) :] = 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=n,
        do_sample=False,
        use_cache=True,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
    )
    rows = []
    for row in out[:, width:].tolist():
        end = next((k + 1 for k, t in enumerate(row) if t in stop_ids), len(row))
        rows.append(row[:end])
    return rows


def greedy_replies(
    model: Any,
    tokenizer: Any,
    records: Sequence[PromptRecord],
    *,
    start: str = "",
    template: str = "plain",
    max_new_tokens: int = 40,
) -> list[str]:
    """Greedy replies, a calculator call run as the rollout runs it (one call at most).

    ``start`` forces the reply's first text (``CALL_OPEN``: through the tool; ``<answer>``:
    directly); it is part of the returned text.
    """
    import torch

    protocol, calculator = Protocol(MARKERS), CalculatorTool()
    eos, close = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(MARKERS.call_close)
    pad = tokenizer.pad_token_id
    first = tokenizer(start, add_special_tokens=False)["input_ids"] if start else []
    prompts = [
        tokenizer(render_prompt(tokenizer, r, template), add_special_tokens=False)["input_ids"]
        for r in records
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        turns = _greedy(model, [p + first for p in prompts], [eos, close], pad, max_new_tokens)
        replies = [first + t for t in turns]
        calling = [i for i, t in enumerate(replies) if t and t[-1] == close]
        contexts = []
        for i in calling:
            call = protocol.find_call(tokenizer.decode(replies[i]))
            result = calculator.run(call.code if call else "", 1.0)
            replies[i] = (
                replies[i]
                + tokenizer(protocol.wrap_output(result.output), add_special_tokens=False)[
                    "input_ids"
                ]
            )
            contexts.append(prompts[i] + replies[i])
        if contexts:
            more = _greedy(model, contexts, [eos], pad, max_new_tokens)
            for i, t in zip(calling, more, strict=True):
                replies[i] = replies[i] + t
    model.train(was_training)
    return [tokenizer.decode(r, skip_special_tokens=True) for r in replies]


def _accuracy(replies: Sequence[str], records: Sequence[PromptRecord]) -> float:
    right = sum(
        tiny._is_correct("arithmetic", c, r.reference)
        for c, r in zip(replies, records, strict=True)
    )
    return right / max(1, len(records))


def call_probability(
    model: Any, tokenizer: Any, records: Sequence[PromptRecord], template: str = "plain"
) -> float:
    """Mean probability (temperature 1) that a reply starts with a calculator call."""
    import torch

    open_id = tokenizer.convert_tokens_to_ids(CALL_OPEN)
    texts = [render_prompt(tokenizer, r, template) for r in records]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(**enc).logits[:, -1, :]
    model.train(was_training)
    return float(torch.softmax(logits.float(), -1)[:, open_id].mean())


def measure(
    model: Any, tokenizer: Any, records: Sequence[PromptRecord], recipe: ToolsRecipe
) -> dict[str, float]:
    """Greedy accuracy as is, through the tool (forced call) and direct (forced answer), and
    the call probability."""
    kw: dict[str, Any] = {"template": recipe.template, "max_new_tokens": recipe.max_new_tokens}
    return {
        "greedy_accuracy": _accuracy(greedy_replies(model, tokenizer, records, **kw), records),
        "tool_accuracy": _accuracy(
            greedy_replies(model, tokenizer, records, start=CALL_OPEN, **kw), records
        ),
        "direct_accuracy": _accuracy(
            greedy_replies(model, tokenizer, records, start="<answer>", **kw), records
        ),
        "call_probability": call_probability(model, tokenizer, records, recipe.template),
    }


# -- build -------------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(f"[tiny:tools] {msg}", file=sys.stderr, flush=True)


def _problems(recipe: ToolsRecipe) -> tuple[list, list]:
    """(train, valid) problems from the ``train`` split; the ``test`` split is never seen."""
    pool = arithmetic.generate(
        20_000, seed=recipe.seed, split="train", digits=recipe.digits, ops="*"
    )
    valid = [p for p in pool if split_bucket(p.key) == WARM_START_VALID_BUCKET]
    train = [p for p in pool if split_bucket(p.key) != WARM_START_VALID_BUCKET]
    return train, valid[: recipe.valid_size]


def _replies(recipe: ToolsRecipe, train: list, tool_frac: float) -> list[tuple[Segments, bool]]:
    """(reply, ends with eos) per problem: a call in ``tool_frac`` of them, else the start of
    a direct answer only (``<answer>``: the decision, not the digits; see _warm_start)."""
    rng = random.Random(f"tools/{recipe.seed}/{tool_frac}")
    return [
        (tool_reply(p), True) if rng.random() < tool_frac else ([("<answer>", True)], False)
        for p in train
    ]


class _Trainer:
    """Supervised steps over one set of examples, in seeded random epochs."""

    def __init__(self, model: Any, tokenizer: Any, recipe: ToolsRecipe) -> None:
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.rng = random.Random(recipe.seed)
        self.step = 0
        self.restart(recipe.lr)
        self.loss_ema = float("inf")
        self.examples: list[tuple[list[int], list[bool]]] = []
        self.order: list[int] = []

    def restart(self, lr: float, warmup: int = 50) -> None:
        """A fresh optimizer (with warmup): Adam's second moments from an easier loss would
        turn the first gradients of a harder one into huge steps."""
        import torch

        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98)
        )
        self.lr, self.warmup, self.start = lr, warmup, self.step

    def use(self, train: list, tool_frac: float) -> None:
        self.examples = [
            encode_reply(
                self.tokenizer,
                render_prompt(self.tokenizer, p.prompt(), self.recipe.template),
                reply,
                eos,
            )
            for p, (reply, eos) in zip(train, _replies(self.recipe, train, tool_frac), strict=True)
        ]
        self.order = []

    def train_step(self) -> None:
        import torch

        for group in self.opt.param_groups:  # linear warmup, then constant
            group["lr"] = self.lr * min(1.0, (self.step - self.start + 1) / self.warmup)
        if len(self.order) < self.recipe.batch_size:
            fresh = list(range(len(self.examples)))
            self.rng.shuffle(fresh)
            self.order += fresh
        batch = self.order[: self.recipe.batch_size]
        self.order = self.order[self.recipe.batch_size :]
        input_ids, mask, labels = tiny._sft_batch(
            [self.examples[i] for i in batch], self.tokenizer.pad_token_id
        )
        loss = self.model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        x = loss.item()
        self.loss_ema = x if self.loss_ema == float("inf") else 0.9 * self.loss_ema + 0.1 * x


def _warm_start(model, tokenizer, recipe: ToolsRecipe, train: list, valid: list) -> dict[str, Any]:
    """Supervised fine-tune in two stages.

    1. Replies through the tool only, until they are right on ``tool_accuracy`` of the
       validation slice.
    2. The mix: ``tool_frac`` calls, the rest only the start of a direct answer
       (``<answer>``, the decision), until the probability of starting with a call has come
       down into ``call_band``, and at least ``mix_min_steps`` (at ``mix_lr``, with a fresh
       optimizer). The digits of a direct answer are the model's own guess, never trained:
       training them (the products, which a 0.44M model cannot learn) pulled the tokens
       after ``<answer>`` away from copying the tool's output (through the tool: 98% before
       the mix, 22% after, in one build).
    """
    t0 = time.monotonic()
    records = [p.to_record(str(i)) for i, p in enumerate(valid)]
    kw: dict[str, Any] = {"template": recipe.template, "max_new_tokens": recipe.max_new_tokens}
    history: list[dict[str, Any]] = []
    run = _Trainer(model, tokenizer, recipe)
    run.use(train, 1.0)
    tool_acc = 0.0
    while run.step < recipe.max_steps:
        run.train_step()
        if run.step % recipe.eval_every:
            continue
        replies = greedy_replies(model, tokenizer, records, start=CALL_OPEN, **kw)
        tool_acc = _accuracy(replies, records)
        history.append(
            {"step": run.step, "loss": round(run.loss_ema, 4), "tool_accuracy": tool_acc}
        )
        _log(
            f"stage 1 step {run.step}: loss {run.loss_ema:.3f}, through the tool {tool_acc:.1%} "
            f"({time.monotonic() - t0:.0f}s)"
        )
        if tool_acc >= recipe.tool_accuracy:
            break
    stage1 = run.step
    run.use(train, recipe.tool_frac)
    run.restart(recipe.mix_lr, warmup=10)
    p_call = 1.0
    while run.step < recipe.max_steps:
        run.train_step()
        if (run.step - stage1) % 5:
            continue
        p_call = call_probability(model, tokenizer, records, recipe.template)
        history.append(
            {"step": run.step, "loss": round(run.loss_ema, 4), "call_probability": p_call}
        )
        low, high = recipe.call_band
        if low <= p_call <= high and run.step - stage1 >= recipe.mix_min_steps:
            break
    measured = measure(model, tokenizer, records, recipe)
    _log(
        f"stage 2 stopped at step {run.step}: "
        + ", ".join(f"{k} {v:.1%}" for k, v in measured.items())
        + f" ({time.monotonic() - t0:.0f}s)"
    )
    return {
        "steps": run.step,
        "stage1_steps": stage1,
        **{f"valid_{k}": v for k, v in measured.items()},
        "valid_size": len(records),
        "train_problems": len(train),
        "history": history,
        "seconds": round(time.monotonic() - t0, 1),
    }


def build_from_recipe(recipe: ToolsRecipe, out_dir: Path) -> Path:
    """Build ``tiny:tools`` into ``out_dir`` (created) and return it. Progress: stderr."""
    import torch
    from tokenizers import AddedToken

    t0 = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, valid = _problems(recipe)
    corpus = []
    for i, p in enumerate(train[:4000]):
        text = "".join(seg for seg, _ in (direct_reply(p) if i % 2 else tool_reply(p)))
        for marker in TOOL_TOKENS:  # added tokens below: no merges spent on them
            text = text.replace(marker, " ")
        corpus.append(_prompt_text(p.prompt(), recipe.template) + text + tiny.IM_END)
    tokenizer = tiny.train_tokenizer(corpus, recipe.vocab_size)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    model = tiny._new_model(recipe, tokenizer)  # type: ignore[arg-type]  # same shape fields
    n_params = sum(p.numel() for p in model.parameters())
    _log(
        f"building: {n_params / 1e6:.2f}M-parameter Qwen2, vocabulary {len(tokenizer)}, "
        f"{len(train)} training problems, {recipe.tool_frac:.0%} of replies call the tool"
    )
    report: dict[str, Any] = {"parameters": n_params}
    if recipe.warm_start:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as tiny.py: these matrices are too small to split
        try:
            report["warm_start"] = _warm_start(model, tokenizer, recipe, train, valid)
        finally:
            torch.set_num_threads(threads)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    report["seconds"] = round(time.monotonic() - t0, 1)
    meta = {"recipe": asdict(recipe), "report": report}
    (out_dir / "rlvr_tiny.json").write_text(json.dumps(meta, indent=2) + "\n")
    _log(f"built {out_dir} in {report['seconds']}s")
    return out_dir


def _prompt_text(prompt: str, template: str) -> str:
    """The prompt as tiny.CHAT_TEMPLATE renders it (before there is a tokenizer)."""
    msgs = build_messages(prompt, template)
    turns = "".join(f"{tiny.IM_START}{m['role']}\n{m['content']}{tiny.IM_END}\n" for m in msgs)
    return f"{turns}{tiny.IM_START}assistant\n"
