"""The math verifier: is the final answer of a completion equivalent to the gold answer?

Two steps, both built on Hugging Face's ``math-verify`` (sympy underneath):

1. **Find the answer.** Only text after the last ``</think>`` counts (an answer written
   only inside the reasoning is no answer; so is an unclosed ``<think>``). In that text,
   in order of preference: the last ``<answer>…</answer>``; else the last ``\\boxed{…}``
   (with the boxes right before it when only ``,``/``and``/``\\quad`` separate them:
   ``\\boxed{2}, \\boxed{3}`` is the set {2, 3}); else math-verify's own extraction
   ("final answer is …", the last LaTeX span, the last number or expression).
2. **Compare.** A tagged or boxed answer is a bare expression (``57``, ``\\frac{3}{4}``,
   ``[1, 3)``, ``57 apples``): it is tidied (digit grouping, scientific notation, mixed
   numbers, spacing commands, units after a number, unicode symbols) and parsed as
   LaTeX. Where the answer sits in explicit math delimiters (a box, ``$…$``),
   math-verify's own reading of it is kept as a second reading, so that we never do
   worse than calling math-verify directly. ``math_verify.verify`` then decides whether
   any reading of the answer equals any reading of the gold (numerically, symbolically,
   as sets, intervals, tuples, matrices or equations: ``x=2`` matches ``2``). A gold
   answer that is one capital letter ``A``–``J`` is a multiple-choice answer, matched
   against the letter the completion chose. Gold answers are parsed once per worker
   (LRU cache): the G completions of a group share one.

Timeouts: math-verify's own timeout uses ``signal.alarm``, which raises off the main
thread (and so every score silently became 0 in other frameworks' Ray workers). Here
math-verify runs with its timeouts off, always inside a :class:`~verifiers.pool.VerifierPool`
worker that kills a hung sympy call: ``verify()`` from any thread goes through the
shared pool; inside a worker it runs in-process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from verifiers import pool
from verifiers.base import BadReferenceError, Verdict, Verifier, answer_tag, split_think
from verifiers.options import MathOptions, check_options

# Free-form answers are at the end; math-verify's regexes need not scan a whole essay.
_MAX_TEXT_CHARS = 10_000
_EXTRACTORS = ("latex", "expr")


class MathVerifier(Verifier):
    """Math answers (numbers, fractions, expressions, sets, intervals, equations, letters).

    Args:
        timeout_s: hard limit per item (the worker is killed past it).
        float_rounding: decimal places floats are rounded to before comparing.
        numeric_precision: significant digits of numeric (``evalf``) comparisons.
        strict: variables must match (``x+1`` ≠ ``y+1``) and sets ≠ tuples.
        allow_set_relation_comp: let ``1 < x < 2`` match ``(1, 2)`` in both directions.
        extract: which of math-verify's extractors read answers: ``"latex"``
            (formulas) and/or ``"expr"`` (plain numbers and expressions).
    """

    name: ClassVar[str] = "math"
    description: ClassVar[str] = (
        "Final math answer (after </think>: <answer>…</answer>, else the last \\boxed{}, "
        "else the last expression) compared with the gold answer by math-verify/sympy: "
        "numbers, fractions, percents, roots, pi, expressions, equations, sets, intervals, "
        "tuples, multiple-choice letters. With require_number, an integer gold needs a number, "
        "not an expression equal to it (15 + 29 for 44 is 'unevaluated'). Reasons: ok, "
        "no_answer, parse_error, mismatch, unevaluated, timeout, error."
    )
    reference_format: ClassVar[str] = (
        'the gold answer as a string, e.g. "3/4", "\\\\frac{3}{4}", "x=2", "[1, 3)", "B" '
        "(a number is accepted too)"
    )

    def __init__(
        self,
        timeout_s: float = 5.0,
        float_rounding: int = 6,
        numeric_precision: int = 15,
        strict: bool = True,
        allow_set_relation_comp: bool = False,
        extract: Sequence[str] = _EXTRACTORS,
        require_number: bool = False,
    ):
        opts = check_options(
            MathOptions,
            {
                "timeout_s": timeout_s,
                "float_rounding": float_rounding,
                "numeric_precision": numeric_precision,
                "strict": strict,
                "allow_set_relation_comp": allow_set_relation_comp,
                "extract": list(extract) if isinstance(extract, list | tuple) else extract,
                "require_number": require_number,
            },
        )  # OptionsError (a ValueError) naming each bad option
        self.timeout_s = opts.timeout_s
        self.extract = tuple(e for e in _EXTRACTORS if e in opts.extract)
        self.options = {
            "timeout_s": self.timeout_s,
            "float_rounding": opts.float_rounding,
            "numeric_precision": opts.numeric_precision,
            "strict": opts.strict,
            "allow_set_relation_comp": opts.allow_set_relation_comp,
            "extract": list(self.extract),
            "require_number": opts.require_number,
        }

    def check_reference(self, reference: Any) -> None:
        _gold_text(reference)

    def verify(self, completion: str, reference: Any) -> Verdict:
        """Score one completion; returns within ``timeout_s`` (+ a fraction of a second)."""
        return self.verify_batch([(completion, reference)])[0]

    def verify_batch(self, items: Sequence[tuple[str, Any]]) -> list[Verdict]:
        """Score many completions in parallel in the shared pool, each within ``timeout_s``."""
        if pool.in_worker():
            return [self._verify_here(c, r) for c, r in items]
        requests = [(self.name, self.options, c, r) for c, r in items]
        return pool.shared_pool().verify_many(requests, timeout_s=self.timeout_s)

    def _verify_here(self, completion: Any, reference: Any) -> Verdict:
        """The verification itself, in this process (callers bound its time)."""
        gold = _parsed_gold(_gold_text(reference), self.extract)
        if not isinstance(completion, str):
            return Verdict(0.0, False, "no_answer", {"why": "completion is not a string"})
        answer = extract_answer(completion)
        if answer.span is None:
            return Verdict(0.0, False, "no_answer", {"why": answer.source})
        details: dict[str, Any] = {"source": answer.source, "gold": gold.text[:200]}
        if gold.letter:
            letter = _choice_letter(answer)
            details["extracted"] = letter
            if letter is None:
                reason = "no_answer" if answer.source == "text" else "parse_error"
                return Verdict(0.0, False, reason, details)
            ok = letter == gold.letter
            return Verdict(float(ok), ok, "ok" if ok else "mismatch", details)

        readings = _read_prediction(answer, self.extract)
        details["extracted"] = _as_text(readings, answer.span)
        if not readings:
            reason = "no_answer" if answer.source == "text" else "parse_error"
            return Verdict(0.0, False, reason, details)
        ok = _math_verify().verify(
            list(gold.readings),
            readings,  # passes if any reading of the answer matches any reading of the gold
            float_rounding=self.options["float_rounding"],
            numeric_precision=self.options["numeric_precision"],
            strict=self.options["strict"],
            allow_set_relation_comp=self.options["allow_set_relation_comp"],
            timeout_seconds=None,  # the pool enforces time; signal.alarm breaks off-thread
        )
        if (
            ok
            and self.options.get("require_number")
            and _INTEGER_RE.match(gold.text.strip())
            and _UNEVALUATED_RE.search(details["extracted"])
        ):
            # Restating the question ("15 + 29") equals the gold to sympy; rewarding it would
            # teach the policy to echo the problem instead of solving it.
            return Verdict(0.0, False, "unevaluated", details)
        if ok:
            return Verdict(1.0, True, "ok", details)
        only_text = all(isinstance(r, str) for r in readings)
        return Verdict(0.0, False, "parse_error" if only_text else "mismatch", details)


# --------------------------------------------------------------------- extraction


class Answer:
    """Where a completion's final answer is.

    Attributes:
        span: the answer text (tag content, box content) or, for ``source="text"``, the
            text math-verify extracts from; ``None`` when there is no answer.
        source: ``answer_tag``, ``boxed`` or ``text``; when ``span`` is None, why not.
        scope: the text math-verify's own extraction may read (``None``: not safe,
            because a bare answer without delimiters is LaTeX it misreads).
    """

    __slots__ = ("scope", "source", "span")

    def __init__(self, span: str | None, source: str, scope: str | None = None):
        self.span, self.source, self.scope = span, source, scope

    def __repr__(self) -> str:
        return f"Answer(span={self.span!r}, source={self.source!r})"


_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b\s*")
# What may separate boxes that together are one answer: \boxed{2}, \boxed{3} and \boxed{5}
_BOX_JOINER_RE = re.compile(
    r"^(?:\s|[,;&$.]|\\[()\[\]]|\\q?quad\b|\\[,;: ]|\\text\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)*$"
)
_MATH_DELIMITER_RE = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Outermost ``\\boxed{…}`` / ``\\fbox{…}`` / ``\\boxed 5`` in ``text``: (start, end, content)."""
    found: list[tuple[int, int, str]] = []
    end = 0
    for match in _BOXED_RE.finditer(text):
        if match.start() < end:
            continue  # inside the previous box
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                if text[i] in "{}" and text[i - 1] == "\\":
                    continue  # \{ and \} are set braces, not grouping
                depth += 1 if text[i] == "{" else -1 if text[i] == "}" else 0
                if depth == 0:
                    found.append((match.start(), i + 1, text[start + 1 : i]))
                    end = i + 1
                    break
        else:
            token = re.match(r"[^\s$]+", text[start:])
            if token:
                end = start + token.end()
                found.append((match.start(), end, token.group(0)))
    return found


def last_boxed(text: str) -> str | None:
    """The final boxed answer of ``text``: the last box's content, joined with the boxes
    right before it when only separators (``,``, ``and``, ``\\quad``…) stand between."""
    boxes = _boxes(text)
    if not boxes:
        return None
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _BOX_JOINER_RE.match(text[box[1] : run[0][0]]):
            break
        run.insert(0, box)
    contents = [last_boxed(c) if _BOXED_RE.search(c) else c for _, _, c in run]
    return ", ".join(c for c in contents if c is not None and c.strip()) or None


def extract_answer(completion: str) -> Answer:
    """Find the final answer of ``completion`` (see the module docstring for the order)."""
    if "<think>" in completion and "</think>" not in completion:
        return Answer(None, "the think block is never closed")
    _, tail = split_think(completion)
    tagged = answer_tag(tail)
    if tagged:
        boxed = last_boxed(tagged)
        if boxed:
            return Answer(boxed, "answer_tag", tagged)
        scope = tagged if _MATH_DELIMITER_RE.search(tagged) else None
        return Answer(tagged, "answer_tag", scope)
    if "<answer>" in tail:  # an answer tag cut off by the token budget
        tail = tail.rpartition("<answer>")[2]
    tail = tail[-_MAX_TEXT_CHARS:]
    boxed = last_boxed(tail)
    if boxed:
        return Answer(boxed, "boxed", tail)
    if tail.strip():
        return Answer(tail, "text", tail)
    return Answer(
        None, "nothing after the reasoning" if "</think>" in completion else "empty completion"
    )


# ------------------------------------------------------------------ normalisation

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u22c5": "\\cdot ", "\u00b7": "\\cdot ",
    "\u00f7": "\\div ", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u00b0": "^\\circ",
    "\u2264": "\\leq ", "\u2265": "\\geq ", "\u2260": "\\neq ", "\u2205": "\\emptyset ",
    "\u222a": "\\cup ", "\u2229": "\\cap ", "\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4",
}  # fmt: skip
_SQRT_UNICODE_RE = re.compile(r"\u221a\s*(\d+(?:\.\d+)?|[a-zA-Z]|\{[^{}]*\}|\([^()]*\))")
# \, \! \; \: ~ and {,} between digit groups: 1\,000\,000 and 11,\!111 are one number.
_DIGIT_GROUP_SEP_RE = re.compile(r"(?<=\d)(,?)(?:\\[,;:! ]|~|\{,\})\s*(?=\d{3}(?!\d))")
_SPACE_CMD_RE = re.compile(r"(?<!\\)\\(?:q?quad\b|[,;: ]|hspace\*?\{[^}]*\})|~")  # not \\ (new row)
_SPACE_GROUPS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?: \d{3})+(?![\d,]|\.\d)")
_SCI_RE = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
_MIXED_RE = re.compile(r"^(-?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_SQRT_CALL_RE = re.compile(r"(?<![\\\w])sqrt\s*\(([^()]*)\)")
_WORD_PI_RE = re.compile(r"(?<![\\\w])pi(?!\w)")
_NUMBER_UNIT_RE = re.compile(
    r"^(-?\$?\d[\d,]*(?:\.\d+)?)\s+(?!pi\b|and\b|or\b)[A-Za-z]{2,}(?:\s*/\s*[A-Za-z]+)?\.?$"
)
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mbox|textrm)\{([^{}]*)\}$")
_COMMAND_RE = re.compile(r"\\(?:begin|end|operatorname)\{[^}]*\}|\\[A-Za-z]+")
# Words that do not make an answer prose: functions, and the "and"/"or" of "2 and 3".
_MATH_WORDS = frozenset(
    {"sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "sqrt", "max", "min", "mod", "gcd",
     "lcm", "det", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "inf", "sup", "lim",
     "and", "or"}
)  # fmt: skip


def _normalize_text(text: str) -> str:
    """Rewrites that are safe anywhere, prose included."""
    for char, latex in _UNICODE.items():
        text = text.replace(char, latex)
    text = _SQRT_UNICODE_RE.sub(r"\\sqrt{\1}", text)
    text = _DIGIT_GROUP_SEP_RE.sub(r"\1", text)
    text = text.replace("\\varnothing", "\\emptyset").replace("\\!", "")
    text = _SPACE_CMD_RE.sub(" ", text)
    return _SCI_RE.sub(r"\1\\times 10^{\2}", text)


def _normalize_answer(span: str) -> str:
    """Tidy a bare answer (from a tag, a box or a gold string) into parseable LaTeX."""
    text = _normalize_text(span).replace("\\$", "").strip()  # \$ is currency
    changed = True
    while changed:  # peel $…$, \(…\), full stops, \text{…}, (…) around the whole answer
        changed = False
        for left, right in _DELIMITERS:
            if (
                len(text) > len(left) + len(right)
                and text.startswith(left)
                and text.endswith(right)
            ):
                text, changed = text[len(left) : -len(right)].strip(), True
        if text.endswith("."):  # a sentence's full stop; no number ends with one
            text, changed = text[:-1].rstrip(), True
        wrapped = _TEXT_WRAP_RE.match(text)
        if wrapped:
            text, changed = wrapped.group(1).strip(), True
        if _redundant_parentheses(text):  # "((5))": latex2sympy is slow on deep nesting
            text, changed = text[1:-1].strip(), True
    text = _SPACE_GROUPS_RE.sub(lambda m: m.group(0).replace(" ", ""), text)
    text = _MIXED_RE.sub(r"\1\2\\frac{\3}{\4}", text)
    text = _SQRT_CALL_RE.sub(r"\\sqrt{\1}", text)
    text = _WORD_PI_RE.sub(r"\\pi", text).replace("**", "^")
    unit = _NUMBER_UNIT_RE.match(text)
    return unit.group(1) if unit else text


def _redundant_parentheses(text: str) -> bool:
    """``(…)`` around the whole answer holding no top-level comma (not a tuple/interval)."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, char in enumerate(text):
        depth += 1 if char in "([{" else -1 if char in ")]}" else 0
        if depth == 0 and i < len(text) - 1:
            return False  # "(1)(2)": the first group closes early
        if depth == 1 and char in ",;":
            return False
    return True


def _is_prose(text: str) -> bool:
    words = re.findall(r"[A-Za-z]{3,}", _COMMAND_RE.sub(" ", text))
    return any(w.lower() not in _MATH_WORDS for w in words)


# ----------------------------------------------------------------------- reading


@functools.cache
def _math_verify():
    """math-verify, imported on first use (sympy takes a while to import)."""
    import math_verify
    import math_verify.grader
    import math_verify.parser

    # We bound time ourselves (pool), so its "timeout is disabled" warning is noise.
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    return math_verify


@functools.cache
def _configs(extract: tuple[str, ...]) -> list:
    mv = _math_verify()
    configs: list = []
    if "latex" in extract:
        configs.append(mv.LatexExtractionConfig(boxed_match_priority=0))
    if "expr" in extract:
        configs.append(mv.ExprExtractionConfig())
    return configs


def _mv_parse(text: str, configs: list) -> list:
    return _math_verify().parse(text, configs, parsing_timeout=None)


def _has_math(readings: list) -> bool:
    return any(not isinstance(r, str) for r in readings)


# Bare answers up to this long have their readings kept (per worker, least recently used
# first out): an RL step's completions repeat a few answers ("148" in most of a group), and
# math-verify's parse is most of a verification (docs/benchmarks.md, "Verifiers").
_KEPT_READING_CHARS = 256


def _read_bare(span: str, extract: tuple[str, ...]) -> list:
    """Our reading of a bare answer (tag or box content, gold string): math-verify's parse
    output, ``[sympy object, text]``, ``[text]`` if only text was found, ``[]`` if nothing."""
    if len(span) > _KEPT_READING_CHARS:
        return _read_bare_now(span, extract)
    return list(_read_bare_kept(span, extract))  # a new list: callers extend it


@functools.lru_cache(maxsize=4096)
def _read_bare_kept(span: str, extract: tuple[str, ...]) -> tuple:
    # (sympy objects are immutable, and verify only reads them: the gold's are shared the
    # same way through _parsed_gold)
    return tuple(_read_bare_now(span, extract))


def _read_bare_now(span: str, extract: tuple[str, ...]) -> list:
    text = _normalize_answer(span)
    if not text:
        return []
    configs = _configs(extract)
    if "latex" not in extract:
        return _mv_parse(text, configs)
    # A bare answer is LaTeX without delimiters ("\sqrt{2}", "[1, 3)"): read it as an
    # inline formula. Prose ("57 apples", "\text{Evelyn}") goes through math-verify's
    # text extraction first, since LaTeX reads words as products of symbols.
    if "$" in text:
        attempts = [text]
    elif _is_prose(text):
        attempts = [text, f"${text}$"]
    else:
        attempts = [f"${text}$", text]
    first: list = []
    for attempt in attempts:
        readings = _mv_parse(attempt, configs)
        if _has_math(readings):
            return readings
        first = first or readings
    return first


def _read_prediction(answer: Answer, extract: tuple[str, ...]) -> list:
    """Every reading of the answer: ours first, then math-verify's own where safe."""
    assert answer.span is not None
    if answer.source == "text":
        readings = _mv_parse(answer.span, _configs(extract))
        tidied = _normalize_text(answer.span)
        if tidied != answer.span and not _has_math(readings):
            readings += _mv_parse(tidied, _configs(extract))
        return readings
    readings = _read_bare(answer.span, extract)
    if answer.scope is not None:
        readings += _mv_parse(answer.scope, _configs(extract))
    return readings


def _as_text(readings: list, span: str) -> str:
    # math-verify returns the matched text next to the sympy object; str() of a sympy
    # object can itself hang (a 10^10^10 integer), so never call it.
    texts = [r for r in readings if isinstance(r, str)]
    return (texts[0] if texts else span)[:200]


# ---------------------------------------------------------------- multiple choice

_LETTER_RE = re.compile(r"^\(?([A-J])\)?$")
_INTEGER_RE = re.compile(r"^[-+]?\d[\d,]*$")
# Arithmetic left to do: an operator between two numbers, or a fraction/root to work out.
_UNEVALUATED_RE = re.compile(
    r"\d\s*(?:[-+*/^×÷·]|\\times|\\cdot|\\div)\s*[-(]?\s*\d|\\d?frac|\\sqrt"
)
_LETTER_START_RE = re.compile(r"^\(?\s*([A-Ja-j])\s*(?:\)|\.|:|$|\s)")


def _choice_letter(answer: Answer) -> str | None:
    """The option letter a completion chose, upper-case, or None."""
    assert answer.span is not None
    whole = _LETTER_RE.match(_normalize_answer(answer.span))
    if whole:
        return whole.group(1)
    if answer.source != "text":
        start = _LETTER_START_RE.match(_normalize_answer(answer.span))
        if start:
            return start.group(1).upper()
    text = re.sub(r"\(([A-J])\)", r" \1 ", answer.span)
    config = _math_verify().StringExtractionConfig(strings=tuple("ABCDEFGHIJ"), lowercase=False)
    found = _mv_parse(text, [config])
    return found[0].upper() if found else None


# ------------------------------------------------------------------------ the gold


class _Gold:
    __slots__ = ("letter", "readings", "text")

    def __init__(self, text: str, readings: tuple, letter: str | None):
        self.text, self.readings, self.letter = text, readings, letter


def _gold_text(reference: Any) -> str:
    if isinstance(reference, bool) or not isinstance(reference, str | int | float):
        raise BadReferenceError(
            'math reference must be the gold answer as a string (e.g. "3/4" or "x=2"), '
            f"got {type(reference).__name__}"
        )
    text = str(reference).strip()
    if not text:
        raise BadReferenceError('math reference is empty; give the gold answer, e.g. "42"')
    return text


@functools.lru_cache(maxsize=4096)
def _parsed_gold(gold: str, extract: tuple[str, ...]) -> _Gold:
    """Parse a gold answer once per worker (a group of G completions shares one)."""
    letter = _LETTER_RE.match(_normalize_answer(gold))
    if letter:
        return _Gold(gold, (), letter.group(1))
    if _MATH_DELIMITER_RE.search(gold):
        # A formula in delimiters or a worked solution: math-verify's reading is the
        # reference behaviour; ours of its boxed answer comes first when there is one.
        boxed = last_boxed(gold)
        readings = _read_bare(boxed, extract) if boxed else []
        readings += _mv_parse(gold, _configs(extract))
    else:
        readings = _read_bare(gold, extract)
    if not readings:
        raise BadReferenceError(
            f"math reference {gold[:100]!r} has no answer that math-verify can parse; give the "
            'gold answer alone, e.g. "3/4", "\\\\frac{3}{4}", "x=2", "[1, 3)"'
        )
    return _Gold(gold, tuple(readings), None)


def _warm_up() -> None:
    """Import math-verify and compile its regexes (pool workers call this at start)."""
    MathVerifier()._verify_here("<answer>1</answer>", "1")
    MathVerifier()._verify_here("the answer is $\\frac{1}{2}$", "0.5")
