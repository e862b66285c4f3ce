"""The ``code`` verifier: run the completion's program against test cases in the sandbox.

References: ``{"tests": [{"stdin": .., "stdout": ..}], "float_tol": 1e-6}`` (one run per
case, stdout compared here) or ``{"test_code": .., "entry_point": "add"}`` (HumanEval-style
``def check(candidate)`` or MBPP-style top-level asserts); optional ``"timeout_s"`` per case.
Score = the fraction of cases passed; ``details["cases"]`` gives each case's outcome.

Function tests are never judged in the process that ran the program: it only records what
the function returned (``sandbox/harness.py``); literal comparisons are judged here, other
asserts by a replay run that holds no program code. Tests that are random or call the
program's other functions run as one ``check(candidate)`` case (pass/fail). How and why:
``docs/verifiers.md`` ("code").
"""

from __future__ import annotations

import ast
import builtins
import copy
import json
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import Limits, RunResult, RunSpec, Sandbox, SandboxError, get_sandbox
from sandbox import harness as _harness
from verifiers.base import BadReferenceError, Verdict, Verifier, answer_tag, split_think
from verifiers.options import CodeOptions, check_options

_HARNESS_SOURCE = Path(_harness.__file__).read_text()
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr)


def extract_program(completion: str) -> str | None:
    """The program in a completion: the last fenced Python block after ``</think>``, else
    the ``<answer>`` content, else the whole answer text. ``None`` when there is nothing."""
    _, answer = split_think(completion)
    blocks = [body for tag, body in _FENCE_RE.findall(answer) if tag.lower() in _PYTHON_TAGS]
    if blocks:
        program = blocks[-1]
    else:
        tagged = answer_tag(answer)
        program = tagged if tagged is not None else answer
    program = program.strip("\n")
    return program if program.strip() else None


def outputs_match(actual: str, expected: str, float_tol: float | None = None) -> bool:
    """Whitespace-normalised comparison: the same tokens in the same order; with
    ``float_tol``, numeric tokens may differ by that much (absolute or relative)."""
    got, want = actual.split(), expected.split()
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if g == w:
            continue
        if float_tol is None:
            return False
        try:
            gf, wf = float(g), float(w)
        except ValueError:
            return False
        if not math.isclose(gf, wf, rel_tol=float_tol, abs_tol=float_tol):
            return False
    return True


# ------------------------------------------------------------------- function-test plans


@dataclass
class _Case:
    """One function-test case and how it is judged.

    A single ``assert`` whose calls of the function are "holes" (not nested, not bound to
    names inside the expression, always evaluated): the recording run evaluates only the
    holes, so nothing else of the test enters the program's sandbox. ``check`` is the
    assert's test with hole k replaced by ``__hole_k``: judged here when ``judge_here``,
    else by the replay run with the recorded values bound to those names. Anything else
    (several statements, loops, comprehensions): ``check`` is ``None``; the statements run
    in the recording run with the function recording its results, and again in the replay
    run with a function that returns them in order.
    """

    record_source: str
    replay_source: str
    check: ast.expr | None = None
    holes: int = 0
    judge_here: bool = False


@dataclass
class _Plan:
    """Setup statements and cases in test order: ``("setup", source)`` / ``("case", _Case)``."""

    steps: list[tuple[str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # names bound to the program's function
    # Whole mode: one case runs all the tests (check(candidate)), judged pass/fail by replay;
    # ``program_names`` are other functions of the program the tests call (recorded too).
    whole: bool = False
    program_names: list[str] = field(default_factory=list)

    @property
    def cases(self) -> list[_Case]:
        return [c for kind, c in self.steps if kind == "case"]

    def record_steps(self) -> list[tuple[str, str]]:
        """The steps of the recording run: each case's record source, and only the setup
        that those need (imports, and statements defining a name they use, transitively).
        A test's ``expected = ...`` or reference helper stays out of the program's sandbox.
        In whole mode every setup step runs (the replay run must see the same state).
        """
        if self.whole:
            return [(k, c.record_source if k == "case" else c) for k, c in self.steps]
        needed: set[str] = set()
        for case in self.cases:
            needed |= _loaded_names(case.record_source)
        setups = [src for kind, src in self.steps if kind == "setup"]
        keep = [False] * len(setups)
        changed = True
        while changed:
            changed = False
            for i, src in enumerate(setups):
                tree = ast.parse(src)
                is_import = all(isinstance(n, ast.Import | ast.ImportFrom) for n in tree.body)
                if not keep[i] and (is_import or _bound_names(tree) & needed):
                    keep[i], changed = True, True
                    needed |= _loaded_names(src)
        kept = iter(keep)
        return [
            (kind, c.record_source if kind == "case" else c)
            for kind, c in self.steps
            if kind == "case" or next(kept)
        ]


def _loaded_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


def _bound_names(tree: ast.AST) -> set[str]:
    """Names a statement binds: assignment targets, defs, classes, imports."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(n.name)
        elif isinstance(n, ast.Import | ast.ImportFrom):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
    return out


def _calls_candidate(node: ast.AST, names: set[str]) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names
        for n in ast.walk(node)
    )


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


class _HoleCutter(ast.NodeTransformer):
    """Replace each outermost call of the function by ``__hole_k``; ``simple`` stays true
    only if every hole can be evaluated on its own, eagerly and in any order."""

    def __init__(self, names: set[str]) -> None:
        self.names, self.simple = names, True
        self.holes: list[ast.Call] = []

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if isinstance(node.func, ast.Name) and node.func.id in self.names:
            if any(_calls_candidate(a, self.names) for a in [*node.args, *node.keywords]):
                self.simple = False  # nested calls: the inner results would need replaying
            self.holes.append(node)
            return ast.copy_location(ast.Name(f"__hole_{len(self.holes) - 1}", ast.Load()), node)
        return self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        lazy: list[ast.AST] = []  # parts the original may never evaluate
        if isinstance(node, ast.IfExp):
            lazy = [node.body, node.orelse]
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            lazy = [*node.values[1:]]
        # A call depending on names bound inside the expression, or one that the original
        # might skip (and that might raise where it never ran).
        scoped = isinstance(node, _SCOPES) and _calls_candidate(node, self.names)
        if scoped or any(_calls_candidate(part, self.names) for part in lazy):
            self.simple = False
        return super().generic_visit(node)


def _literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _judgeable(node: ast.AST) -> bool:
    """Whether the parent can evaluate ``node`` itself: holes, literals, comparisons, logic."""
    if isinstance(node, ast.Name):
        return node.id.startswith("__hole_")
    if isinstance(node, ast.BoolOp):
        return all(_judgeable(v) for v in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _judgeable(node.operand)
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if isinstance(op, ast.Is | ast.IsNot):  # identity only against singletons
                pair = operands[i : i + 2]
                if not any(
                    isinstance(p, ast.Constant) and p.value in (None, True, False) for p in pair
                ):
                    return False
        return all(_judgeable(o) for o in operands)
    return _literal(node)


_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}


def _judge(node: ast.AST, holes: dict[str, object]) -> object:
    """Evaluate a :func:`_judgeable` expression over decoded plain values (never program objects)."""
    if isinstance(node, ast.Name):
        return holes[node.id]
    if isinstance(node, ast.BoolOp):
        value: object = None
        for v in node.values:
            value = _judge(v, holes)
            if isinstance(node.op, ast.And) != bool(value):
                return value
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _judge(node.operand, holes)
    if isinstance(node, ast.Compare):
        left = _judge(node.left, holes)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _judge(comp, holes)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    return ast.literal_eval(node)


def _make_case(stmts: list[ast.stmt], names: set[str]) -> _Case:
    source = "\n".join(ast.unparse(s) for s in stmts)
    if len(stmts) == 1 and isinstance(stmts[0], ast.Assert):
        cutter = _HoleCutter(names)
        test = cutter.visit(ast.parse(ast.unparse(stmts[0].test), mode="eval").body)
        if cutter.simple and cutter.holes:
            return _Case(
                record_source="\n".join(ast.unparse(h) for h in cutter.holes),
                replay_source=f"assert {ast.unparse(test)}",
                check=test,
                holes=len(cutter.holes),
                judge_here=_judgeable(test),
            )
    return _Case(record_source=source, replay_source=source)


class _RecordOnlyCalls(ast.NodeTransformer):
    """The recording run's copy of whole-mode tests: an assert judgeable from its calls
    alone (``assert f(x) == <literal>``) keeps only the calls, in evaluation order, so its
    expected value stays out of the program's sandbox; the replay run has the original."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def visit_Assert(self, node: ast.Assert) -> ast.AST | list[ast.stmt]:
        cutter = _HoleCutter(self.names)
        test = cutter.visit(copy.deepcopy(node.test))
        if cutter.simple and cutter.holes and _judgeable(test):
            return [ast.copy_location(ast.Expr(h), node) for h in cutter.holes]
        return node


def _draws_random(module: ast.Module) -> bool:
    """Whether the tests use ``random`` (inputs drawn fresh in each run)."""
    for n in ast.walk(module):
        if isinstance(n, ast.Import) and any(a.name.split(".")[0] == "random" for a in n.names):
            return True
        if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "random":
            return True
    return False


def _program_names(module: ast.Module, names: list[str]) -> list[str]:
    """Names the tests use but never define: functions they expect from the program
    (HumanEval's ``poly``, ``encode_cyclic``), recorded like the entry point."""
    bound = _bound_names(module) | set(names) | set(dir(builtins))
    for n in ast.walk(module):
        if isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
    loaded = {n.id for n in ast.walk(module) if isinstance(n, ast.Name)}
    return sorted(loaded - bound)


def _leaves_early(fn: ast.FunctionDef) -> bool:
    """Whether ``fn``'s own body (not nested scopes) has ``return``/``yield``/``global``:
    its statements cannot run one by one as top-level steps."""
    todo: list[ast.AST] = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Return | ast.Yield | ast.YieldFrom | ast.Global | ast.Nonlocal):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))
    return False


def _whole_case(
    module: ast.Module, check: ast.FunctionDef | None, entry_point: str, names: set[str]
) -> _Case:
    """One case that runs all the tests: ``check`` defined then called on the entry point
    (HumanEval), else the whole module (MBPP)."""
    tree = ast.Module(body=[check] if check is not None else module.body, type_ignores=[])
    record = ast.fix_missing_locations(_RecordOnlyCalls(names).visit(copy.deepcopy(tree)))
    call = f"\ncheck({entry_point})" if check is not None else ""
    return _Case(record_source=ast.unparse(record) + call, replay_source=ast.unparse(tree) + call)


def plan_function_tests(test_code: str, entry_point: str) -> _Plan:
    """Split ``test_code`` into setup steps and cases (see ``docs/verifiers.md``, "code")."""
    try:
        module = ast.parse(test_code)
    except SyntaxError as exc:
        raise BadReferenceError(
            f"reference test_code does not parse: {exc.msg} (line {exc.lineno})"
        ) from None
    check = next(
        (
            n
            for n in module.body
            if isinstance(n, ast.FunctionDef) and n.name == "check" and n.args.args
        ),
        None,
    )
    plan = _Plan(names=[entry_point])
    if check is not None:  # HumanEval: module-level setup, then check(candidate)'s body
        plan.names.append(check.args.args[0].arg)
        for n in module.body:
            is_check_call = (
                isinstance(n, ast.Expr)
                and isinstance(n.value, ast.Call)
                and isinstance(n.value.func, ast.Name)
                and n.value.func.id == "check"
            )
            if n is not check and not is_check_call:
                plan.steps.append(("setup", ast.unparse(n)))
        body = check.body
    else:  # MBPP: top-level statements
        body = module.body
    module_setup = list(plan.steps)
    names = set(plan.names)
    pending: list[ast.stmt] = []  # statements that call the candidate, waiting for their assert
    for stmt in body:
        calls = _calls_candidate(stmt, names)
        if _has_assert(stmt) and (calls or pending):
            plan.steps.append(("case", _make_case([*pending, stmt], names)))
            pending = []
        elif calls:
            pending.append(stmt)
        else:
            plan.steps.append(("setup", ast.unparse(stmt)))
    if pending:  # calls with no assert after them: run them as one case that must not raise
        plan.steps.append(("case", _make_case(pending, names)))
    if not plan.cases:
        raise BadReferenceError(
            f"reference test_code has no assert that calls {entry_point!r}; "
            f"write cases like `assert {entry_point}(1) == 2`"
        )
    # Per-assert cases are sound only when both runs see the same inputs and the replay run
    # (no program) can evaluate every statement; otherwise all the tests are one case.
    # (Names from the program are fine where only the recording run uses them: the
    # arguments of a cut-out call, ``f(Point(1, 2)) == 3``.)
    from_program = _program_names(module, plan.names)
    replayed = [
        c if k == "setup" else c.replay_source
        for k, c in plan.steps
        if k == "setup" or not c.judge_here
    ]
    replay_needs = set().union(*map(_loaded_names, replayed)) & set(from_program)
    if replay_needs or _draws_random(module) or (check and _leaves_early(check)):
        plan.whole, plan.program_names = True, from_program
        plan.steps = [*module_setup, ("case", _whole_case(module, check, entry_point, names))]
    return plan


# ------------------------------------------------------------------------------ verifier


@dataclass
class _Job:
    """One completion's grading state between the sandbox phases."""

    program: str | None
    reference: dict
    plan: _Plan | None = None
    nonce: str = ""
    outcomes: list[dict] = field(default_factory=list)
    load_error: str | None = None
    record: RunResult | None = None
    replay_values: list | None = None


class CodeVerifier(Verifier):
    """Runs the program from the completion against the reference's tests in the sandbox.

    Args:
        sandbox: a :class:`sandbox.Sandbox` to run in (default: ``get_sandbox(backend)``,
            created on first use and shared by the process).
        backend: sandbox backend when ``sandbox`` is not given (``auto``, ``local``, ``docker``).
        image: the docker backend's image (default: ``RLVR_SANDBOX_IMAGE``, else
            ``python:3.11-slim``; see docs/sandbox.md for building one without a registry).
        timeout_s: wall-clock (and CPU) seconds per test case.
        memory_mb: memory limit of each run.
    """

    name = "code"
    description = (
        "Runs the completion's Python program (last ```python block after </think>) against "
        "test cases in a sandbox; score = fraction of cases passed."
    )
    reference_format = (
        '{"tests": [{"stdin": "1 2\\n", "stdout": "3\\n"}], "float_tol": 1e-6 (optional)} or '
        '{"test_code": "assert add(1, 2) == 3", "entry_point": "add"}; optional "timeout_s"'
    )

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        backend: str = "auto",
        timeout_s: float = 2.0,
        memory_mb: int = 512,
        image: str | None = None,
    ) -> None:
        opts = check_options(  # OptionsError (a ValueError) naming each bad option
            CodeOptions,
            {"backend": backend, "timeout_s": timeout_s, "memory_mb": memory_mb, "image": image},
        )
        self._sandbox = sandbox
        self._backend = opts.backend
        self._image = opts.image
        self.timeout_s = opts.timeout_s
        self.memory_mb = opts.memory_mb

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = get_sandbox(self._backend, image=self._image)
        return self._sandbox

    # ----------------------------------------------------------------- reference checks

    def check_reference(self, reference: Any) -> None:
        self._plan(reference)

    def _plan(self, reference: Any) -> _Plan | None:
        """Validate ``reference``; the function-test plan, or ``None`` for stdin/stdout."""
        if not isinstance(reference, dict):
            raise BadReferenceError(
                "code reference must be a dict: "
                '{"tests": [{"stdin": ..., "stdout": ...}]} or {"test_code": ..., "entry_point": ...}'
            )
        timeout = reference.get("timeout_s")
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise BadReferenceError(
                f"reference timeout_s must be a positive number, got {timeout!r}"
            )
        if "tests" in reference:
            tests = reference["tests"]
            if not isinstance(tests, list) or not tests:
                raise BadReferenceError(
                    "reference 'tests' must be a non-empty list of {stdin, stdout}"
                )
            for i, t in enumerate(tests):
                if not isinstance(t, dict) or not isinstance(t.get("stdout"), str):
                    raise BadReferenceError(f"reference tests[{i}] needs a 'stdout' string")
                if not isinstance(t.get("stdin", ""), str):
                    raise BadReferenceError(f"reference tests[{i}]['stdin'] must be a string")
            tol = reference.get("float_tol")
            if tol is not None and not (isinstance(tol, int | float) and tol >= 0):
                raise BadReferenceError(f"reference float_tol must be a number >= 0, got {tol!r}")
            return None
        if "test_code" in reference:
            if not isinstance(reference["test_code"], str):
                raise BadReferenceError("reference 'test_code' must be a string of Python asserts")
            entry = reference.get("entry_point")
            if not isinstance(entry, str) or not entry.isidentifier():
                raise BadReferenceError(
                    "reference needs 'entry_point': the name of the function the tests call, "
                    f"got {entry!r}"
                )
            return plan_function_tests(reference["test_code"], entry)
        raise BadReferenceError(
            "code reference needs 'tests' (stdin/stdout cases) or 'test_code' + 'entry_point'"
        )

    # ------------------------------------------------------------------------ verify

    def verify(self, completion: str, reference: Any) -> Verdict:
        return self.verify_batch([(completion, reference)])[0]

    def verify_batch(self, items: Sequence[tuple[str, Any]]) -> list[Verdict]:
        """Score many completions; all their sandbox runs share the sandbox's concurrency."""
        jobs = []
        for completion, reference in items:
            plan = self._plan(reference)
            program = extract_program(completion) if isinstance(completion, str) else None
            jobs.append(_Job(program, reference, plan))
        try:
            self._run_phase(jobs, self._first_runs)
            self._run_phase(jobs, self._replay_runs)
        except SandboxError as exc:
            return [Verdict(0.0, False, "error", {"error": f"sandbox: {exc}"}) for _ in jobs]
        return [self._verdict(job) for job in jobs]

    def _run_phase(self, jobs: list[_Job], make_runs) -> None:
        """Collect (spec, on_result) pairs from every job, run them in one batch."""
        pending = [pair for job in jobs if job.program is not None for pair in make_runs(job)]
        if not pending:
            return
        results = self.sandbox.run_many([spec for spec, _ in pending])
        for (_, on_result), result in zip(pending, results, strict=True):
            on_result(result)

    def _limits(self, job: _Job, steps: int = 1) -> Limits:
        timeout = float(job.reference.get("timeout_s", self.timeout_s))
        wall = timeout * steps + 1.0
        return Limits(wall_s=wall, cpu_s=wall, memory_mb=self.memory_mb)

    def _first_runs(self, job: _Job):
        assert job.program is not None  # _run_phase passes only jobs with a program
        if job.plan is None:  # stdin/stdout: one run per case
            job.outcomes = [{} for _ in job.reference["tests"]]
            limits = self._limits(job)
            for i, test in enumerate(job.reference["tests"]):
                spec = RunSpec(job.program, stdin=test.get("stdin", ""), limits=limits)
                yield spec, lambda r, i=i, t=test: self._grade_stdio(job, i, t, r)
            return
        job.nonce = secrets.token_hex(8)
        steps = job.plan.record_steps()
        spec = RunSpec(
            _HARNESS_SOURCE,
            limits=self._limits(job, steps=len(steps) + 1),
            files={"solution.py": job.program, "harness.json": self._harness_spec(job, steps)},
        )
        yield spec, lambda r: self._grade_record(job, r)

    def _harness_spec(self, job: _Job, steps, mode: str = "record", values=None) -> str:
        assert job.plan is not None  # function-call tests only
        spec = {
            "nonce": job.nonce,
            "mode": mode,
            "timeout_s": float(job.reference.get("timeout_s", self.timeout_s)),
            "entry_point": job.reference["entry_point"],
            "candidate_names": job.plan.names,
            "program_names": job.plan.program_names,
            "seed": 0 if job.plan.whole else None,  # both runs draw the same random inputs
            "steps": steps,
            "values": values or [],
        }
        return json.dumps(spec)

    def _replay_runs(self, job: _Job):
        if job.replay_values is None:
            return
        assert job.plan is not None  # replay values come from a plan's record run
        job.nonce = secrets.token_hex(8)
        steps, i = [], 0
        for kind, c in job.plan.steps:
            if kind == "setup":
                steps.append(("setup", c))
                continue
            pending = job.outcomes[i].get("outcome") == "pending"
            steps.append(("case", c.replay_source if pending else "pass"))
            i += 1
        spec = RunSpec(
            _HARNESS_SOURCE,
            limits=self._limits(job, steps=len(steps) + 1),
            files={"harness.json": self._harness_spec(job, steps, "replay", job.replay_values)},
        )
        yield spec, lambda r: self._grade_replay(job, r)

    # ----------------------------------------------------------------------- grading

    def _grade_stdio(self, job: _Job, i: int, test: dict, r: RunResult) -> None:
        outcome = _run_failure(r)
        if outcome is None:
            tol = job.reference.get("float_tol")
            ok = outputs_match(r.stdout, test["stdout"], tol)
            outcome = "passed" if ok else "wrong_answer"
        case = {"outcome": outcome}
        if outcome == "runtime_error":
            case["error"] = _last_line(r.stderr) or f"exit code {r.exit_code}"
        elif outcome == "wrong_answer":
            case["got"] = r.stdout[:200]
        job.outcomes[i] = case

    def _grade_record(self, job: _Job, r: RunResult) -> None:
        assert job.plan is not None  # a record run is made only from a plan
        cases = job.plan.cases
        report, duplicated = _harness.parse_report(r.stdout, job.nonce)
        job.outcomes = [{"outcome": "no_result"} for _ in cases]
        load = report.get("load")
        if "load" in duplicated or not isinstance(load, dict) or load.get("end") != "ok":
            # The program never got to (honest) tests: every case fails, none can pass here.
            end = str(load.get("end")) if isinstance(load, dict) else ""
            if "load" in duplicated:
                outcome, job.load_error = "tampered", "the program forged report lines"
            elif end:
                outcome, job.load_error = ("timeout" if end == "timeout" else "runtime_error"), end
            else:  # exited or was killed before the harness could report
                outcome = _run_failure(r) or "no_result"
                job.load_error = _last_line(r.stderr) or f"exit code {r.exit_code}"
            job.outcomes = [{"outcome": outcome, "error": job.load_error} for _ in cases]
            return
        setup = report.get("setup")
        if isinstance(setup, dict):
            job.load_error = f"test setup failed: {setup.get('end')}"
            job.outcomes = [{"outcome": "runtime_error", "error": job.load_error} for _ in cases]
            return
        values: list = [[] for _ in cases]
        needs_replay = False
        for i, case in enumerate(cases):
            key = str(i)
            entry = report.get(key)
            if key in duplicated:
                job.outcomes[i] = {"outcome": "tampered"}
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("calls"), list):
                job.outcomes[i] = {"outcome": _run_failure(r) or "no_result"}
                continue
            calls, end = entry["calls"], str(entry.get("end"))
            if end in ("timeout", "skipped"):
                job.outcomes[i] = _timeout_outcome(end)
                continue
            if case.check is not None:  # holes: judge the recorded values
                job.outcomes[i] = _judge_holes(case, calls, end)
                if job.outcomes[i]["outcome"] != "pending":
                    continue
            values[i] = calls
            job.outcomes[i] = {"outcome": "pending"}  # the replay run decides
            needs_replay = True
        if needs_replay:
            job.replay_values = values

    def _grade_replay(self, job: _Job, r: RunResult) -> None:
        assert job.plan is not None  # a replay run is made only from a plan
        report, duplicated = _harness.parse_report(r.stdout, job.nonce)
        for i in range(len(job.plan.cases)):
            if job.outcomes[i].get("outcome") != "pending":
                continue
            entry = report.get(str(i))
            if str(i) in duplicated or not isinstance(entry, dict):
                # The replay run holds no program code: a missing result is the test's failure
                # (e.g. it called the function more often than the recording run could).
                job.outcomes[i] = {"outcome": "runtime_error", "error": _last_line(r.stderr)}
                continue
            end = str(entry.get("end"))
            job.outcomes[i] = (
                _timeout_outcome(end)
                if end in ("timeout", "skipped")
                else {"outcome": _end_outcome(end)}
            )

    def _verdict(self, job: _Job) -> Verdict:
        if job.program is None:
            return Verdict(0.0, False, "no_code", {"error": "no program found in the completion"})
        cases = job.outcomes
        passed = sum(c.get("outcome") == "passed" for c in cases)
        score = passed / len(cases) if cases else 0.0
        all_passed = bool(cases) and passed == len(cases)
        reason = (
            "ok" if all_passed else next(c["outcome"] for c in cases if c["outcome"] != "passed")
        )
        details: dict[str, Any] = {
            "format": "function" if job.plan is not None else "stdio",
            "passed": passed,
            "total": len(cases),
            "cases": cases,
        }
        if job.load_error:
            details["error"] = job.load_error
        return Verdict(score, all_passed, reason, details)


def _judge_holes(case: _Case, calls: list, end: str) -> dict:
    """The outcome of a holes case from its recorded values (plain data, decoded here);
    ``pending`` when the replay run has to evaluate the assert."""
    for call in calls:
        if isinstance(call, list) and call[:1] == ["!"]:
            return {"outcome": "runtime_error", "error": str(call[1:2])[:100]}
    if end.startswith("raised:"):
        return {"outcome": "runtime_error", "error": end[len("raised:") :]}
    if len(calls) != case.holes:
        return {"outcome": "no_result"}
    holes = {}
    for k, call in enumerate(calls):
        if isinstance(call, list) and call[:1] == ["?"]:
            return {"outcome": "wrong_answer", "error": f"returned non-plain data {call[1:2]}"}
        try:
            holes[f"__hole_{k}"] = _harness.decode(call)
        except (ValueError, RecursionError, MemoryError) as exc:
            return {"outcome": "wrong_answer", "error": f"undecodable result: {exc}"[:200]}
    if not case.judge_here:
        return {"outcome": "pending"}
    assert case.check is not None  # judge_here cases carry their check
    try:
        ok = bool(_judge(case.check, holes))
    except Exception as exc:  # e.g. `<` between a str and an int: the assert would fail too
        return {"outcome": "wrong_answer", "error": type(exc).__name__}
    out = {"outcome": "passed" if ok else "wrong_answer"}
    if not ok:
        out["got"] = repr(holes.get("__hole_0"))[:200]
    return out


def _timeout_outcome(end: str) -> dict:
    if end == "skipped":
        return {"outcome": "timeout", "error": "not run: an earlier case timed out"}
    return {"outcome": "timeout"}


def _end_outcome(end: str) -> str:
    if end == "ok":
        return "passed"
    if end == "assert":
        return "wrong_answer"
    if end == "timeout":
        return "timeout"
    return "runtime_error"


def _run_failure(r: RunResult) -> str | None:
    """The outcome of a run that hit a limit or failed, else ``None``."""
    if r.timed_out:
        return "timeout"
    if r.oom:
        return "memory_limit"
    if r.truncated:
        return "output_limit"
    if r.exit_code != 0:
        return "runtime_error"
    return None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
