"""VerifierPool: order, worker reuse, timeouts (soft and hard), crashes, caller errors, threads.

The probe verifier below is registered with @register_verifier in this module; pool
workers import this module by name (the pool passes the class's module along), which is
itself part of what is tested.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types

import pytest

from verifiers import BadReferenceError, Verdict, Verifier, register_verifier
from verifiers.pool import VerifierPool, in_worker
from verifiers.registry import UnknownVerifierError


@register_verifier("pool_probe")
class _Probe(Verifier):
    """Does what ``mode`` says, to exercise the pool."""

    description = "test probe"
    reference_format = "anything"
    deterministic = False  # its verdict says which worker ran it: every item runs

    def __init__(self, mode: str = "pid", seconds: float = 0.0):
        self.mode = mode
        self.seconds = seconds

    def verify(self, completion, reference):
        if self.mode == "nap":  # slow but well-behaved (a signal interrupts the sleep)
            time.sleep(self.seconds)
        if self.mode == "busy":  # pure Python: the worker's SIGALRM interrupts it
            while True:
                pass
        if self.mode == "blocked":  # stuck where no signal gets through: must be killed
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(120)
        if self.mode == "importing":  # interrupted while a module is half imported
            sys.modules["_pool_probe_half_imported"] = types.ModuleType("_pool_probe_half_imported")
            while True:
                pass
        if self.mode == "exit":
            os._exit(3)
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "print":
            print("probe says hi", flush=True)
        if self.mode == "unsendable":  # a verdict whose details cannot be pickled back
            return Verdict(1.0, True, "ok", {"callback": lambda: None})
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode()
        return Verdict(
            1.0,
            True,
            "ok",
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "cmdline": cmdline,
                "in_worker": in_worker(),
            },
        )


PID = ("pool_probe", {"mode": "pid"}, "", None)


@register_verifier("pool_tally")
class _Tally(Verifier):
    """Passes; appends ``completion|reference`` to the file ``log`` every time it runs."""

    description = "test tally"
    reference_format = "anything"

    def __init__(self, log: str):
        self.log = log

    def verify(self, completion, reference):
        with open(self.log, "a") as f:
            f.write(f"{completion}|{reference!r}\n")
        return Verdict(1.0, True, "ok", {"completion": completion, "reference": reference})


@register_verifier("pool_tally_each")
class _TallyEach(_Tally):
    deterministic = False


def _dies_in_a_worker() -> None:
    if in_worker():
        os._exit(5)


class _DiesOnArrival:
    """A reference whose unpickling kills the worker: it dies before beginning its batch."""

    def __reduce__(self):
        return (_dies_in_a_worker, ())


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, timeout_s=1.0, preload=()) as p:
        yield p


def _pids(pool: VerifierPool, n: int = 6) -> set[int]:
    return {v.details["pid"] for v in pool.verify_many([PID] * n)}


def test_results_come_back_in_item_order_across_verifiers(pool):
    items = [
        ("math", {}, "<think>2+2</think><answer>4</answer>", "4"),
        ("countdown", {}, "<answer>3*4</answer>", {"numbers": [3, 4], "target": 12}),
        ("think_format", {}, "no structure", None),
        ("math", {}, "<answer>5</answer>", "4"),
        PID,
    ]
    verdicts = pool.verify_many(items)
    assert [v.reason for v in verdicts] == ["ok", "ok", "no_answer", "mismatch", "ok"]
    assert all(isinstance(v, Verdict) for v in verdicts)


def test_workers_are_long_lived_fresh_interpreters_reused_across_calls(pool):
    first, second = _pids(pool), _pids(pool)
    assert first == second and first <= set(pool.worker_pids())
    details = pool.verify_many([PID])[0].details
    assert details["ppid"] == os.getpid()
    assert "-m verifiers._worker" in details["cmdline"]  # spawned, not a fork of pytest
    assert details["in_worker"] is True


def test_python_loop_times_out_softly_and_the_worker_survives(pool):
    before, restarts = set(pool.worker_pids()), pool.restarts
    t0 = time.monotonic()
    verdicts = pool.verify_many([("pool_probe", {"mode": "busy"}, "", None), PID])
    assert time.monotonic() - t0 < pool.timeout_s + 0.5
    assert verdicts[0] == Verdict(0.0, False, "timeout")
    assert verdicts[1].passed
    assert pool.restarts == restarts and set(pool.worker_pids()) == before


def test_a_timeout_during_an_import_retires_the_worker(pool):
    before, restarts = set(pool.worker_pids()), pool.restarts
    verdict = pool.verify_many([("pool_probe", {"mode": "importing"}, "", None)])[0]
    assert verdict == Verdict(0.0, False, "timeout")
    assert pool.restarts == restarts + 1
    assert len(before - set(pool.worker_pids())) == 1
    assert _pids(pool) <= set(pool.worker_pids())


def test_loading_a_verifier_does_not_count_against_the_first_items_time():
    # No preload: the first math item makes the worker import sympy and math-verify
    # (seconds), yet the item gets its full 0.5 s for the verification itself.
    with VerifierPool(workers=1, timeout_s=0.5, preload=()) as fresh:
        verdicts = fresh.verify_many(
            [("math", {}, f"<answer>{i}/4</answer>", "0.25") for i in (1, 2)]
        )
        assert [v.reason for v in verdicts] == ["ok", "mismatch"]
        assert fresh.restarts == 0


def test_uninterruptible_hang_is_killed_and_the_worker_replaced(pool):
    before, restarts = set(pool.worker_pids()), pool.restarts
    t0 = time.monotonic()
    verdict = pool.verify_many([("pool_probe", {"mode": "blocked"}, "", None)])[0]
    assert time.monotonic() - t0 < pool.timeout_s + 0.5
    assert verdict == Verdict(0.0, False, "timeout")
    assert pool.restarts == restarts + 1
    after = set(pool.worker_pids())
    killed = before - after
    assert len(killed) == 1 and len(after) == 2
    with pytest.raises(ProcessLookupError):
        os.kill(killed.pop(), 0)
    assert _pids(pool) <= after  # and the pool keeps working


def test_crash_gives_an_error_verdict_and_a_new_worker(pool):
    restarts = pool.restarts
    verdicts = pool.verify_many([("pool_probe", {"mode": "exit"}, "", None), PID])
    assert verdicts[0].reason == "error" and not verdicts[0].passed
    assert "exit code 3" in verdicts[0].details["error"]
    assert verdicts[1].passed
    assert pool.restarts == restarts + 1


def test_exception_in_a_verifier_is_an_error_verdict_not_a_raise(pool):
    restarts = pool.restarts
    verdict = pool.verify_many([("pool_probe", {"mode": "raise"}, "", None)])[0]
    assert verdict.reason == "error" and "RuntimeError: boom" in verdict.details["error"]
    assert pool.restarts == restarts


def test_per_call_timeout_overrides_the_pool_default(pool):
    t0 = time.monotonic()
    verdict = pool.verify_many([("pool_probe", {"mode": "busy"}, "", None)], timeout_s=0.3)[0]
    assert verdict.reason == "timeout"
    assert time.monotonic() - t0 < 0.3 + 0.5


def test_unknown_verifier_raises_before_anything_runs(pool):
    with pytest.raises(UnknownVerifierError, match="no_such_verifier.*known verifiers:.*math"):
        pool.verify_many([PID, ("no_such_verifier", {}, "x", "1")])


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (("math", {}, "<answer>1</answer>", None), "math reference must be"),
        (("math", {}, "<answer>1</answer>", "   "), "math reference is empty"),
        (("countdown", {}, "<answer>1</answer>", [1, 2]), "countdown reference must be"),
        (("countdown", {}, "<answer>1</answer>", {"numbers": [1], "target": "x"}), '"target"'),
    ],
)
def test_malformed_reference_raises_reference_error(pool, item, match):
    with pytest.raises(BadReferenceError, match=match):
        pool.verify_many([item])


def test_bad_item_shape_and_bad_pool_arguments_name_the_problem(pool):
    with pytest.raises(TypeError, match=r"items\[0\] must be a \(verifier_name"):
        pool.verify_many([("math", "4")])
    with pytest.raises(ValueError, match="workers"):
        VerifierPool(workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        VerifierPool(timeout_s=0)


def test_concurrent_callers_from_threads_each_get_their_results(pool):
    results: dict[int, list[Verdict]] = {}

    def call(thread: int) -> None:
        items = [
            ("math", {}, f"<answer>{thread * 100 + i}</answer>", str(thread * 100 + i))
            for i in range(8)
        ]
        results[thread] = pool.verify_many(items)

    threads = [threading.Thread(target=call, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [0, 1, 2, 3]
    assert all(v.passed for verdicts in results.values() for v in verdicts)


def test_a_verifier_printing_does_not_write_to_the_callers_stdout(pool, capfd):
    assert pool.verify_many([("pool_probe", {"mode": "print"}, "", None)])[0].passed
    captured = capfd.readouterr()
    assert "probe says hi" not in captured.out


def test_workers_that_cannot_start_make_the_pool_fail_loudly():
    broken = VerifierPool(workers=1, preload=("no_such_module_for_the_pool_test",))
    with broken, pytest.raises(RuntimeError, match="verifier workers cannot start: 3 in a row"):
        broken.verify_many([PID] * 5)


def test_an_empty_batch_is_an_empty_list(pool):
    assert pool.verify_many([]) == []


def test_a_closed_pool_refuses_work():
    p = VerifierPool(workers=1, preload=())
    pids = p.worker_pids()
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.verify_many([PID])
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ---------------------------------------------------------------- batches of items
# A message to a worker carries as many items as ~batch_s of measured verification time
# (tests below make that many); each item still gets its own clock, verdict and failure.


def _measured(pool: VerifierPool, item=PID) -> VerifierPool:
    """The pool after it has timed a few items (its first items go one per message)."""
    pool.verify_many([item] * 8)
    return pool


def _between_pids(pool: VerifierPool, item, n: int) -> tuple[Verdict, list[Verdict]]:
    """``item`` verified between ``n`` cheap items on each side (one batch on a measured
    pool): its verdict, and the others' in order."""
    verdicts = pool.verify_many([PID] * n + [item] + [PID] * n)
    return verdicts[n], verdicts[:n] + verdicts[n + 1 :]


def test_cheap_items_travel_many_to_a_message_and_come_back_in_order():
    with VerifierPool(workers=2, timeout_s=5.0) as fresh:
        items = [
            ("math", {}, f"<answer>{i}</answer>", str(i if i % 3 else i + 1)) for i in range(200)
        ]
        _measured(fresh, items[0])
        before = fresh.messages
        verdicts = fresh.verify_many(items)
        assert [v.passed for v in verdicts] == [i % 3 != 0 for i in range(200)]
        assert fresh.messages - before < 200 / 4


def test_batch_s_zero_sends_every_item_alone():
    with VerifierPool(workers=2, timeout_s=5.0, preload=(), batch_s=0) as alone:
        _measured(alone)
        before = alone.messages
        assert all(v.passed for v in alone.verify_many([PID] * 12))
        assert alone.messages - before == 12
    with pytest.raises(ValueError, match="batch_s"):
        VerifierPool(batch_s=-1)


def test_an_item_deep_in_a_batch_gets_its_own_full_time_limit():
    # Three 0.4 s items in one message to one worker take 1.2 s, past the 1 s limit: each
    # item is timed from its own start, so none of them times out.
    nap = ("pool_probe", {"mode": "nap", "seconds": 0.4}, "", None)
    with VerifierPool(workers=1, timeout_s=1.0, preload=(), batch_s=10.0) as slow:
        _measured(slow, PID)
        before = slow.messages
        verdicts = slow.verify_many([nap] * 6)
        assert [v.reason for v in verdicts] == ["ok"] * 6
        assert slow.messages - before < 6 and slow.restarts == 0


def test_an_uninterruptible_hang_inside_a_batch_is_killed_and_only_it_times_out():
    blocked = ("pool_probe", {"mode": "blocked"}, "", None)
    with VerifierPool(workers=1, timeout_s=1.0, preload=()) as one:
        _measured(one)
        first = set(one.worker_pids())
        before = one.messages
        # (the blocked item sleeps 120 s: only the kill gives it the timeout verdict)
        hung, others = _between_pids(one, blocked, 5)
        assert hung == Verdict(0.0, False, "timeout")
        assert all(v.passed for v in others)
        # the items done before the hang were lost with the killed worker and ran again
        assert {v.details["pid"] for v in others} == set(one.worker_pids()) != first
        assert one.restarts == 1 and one.messages - before < 11


def test_a_crash_inside_a_batch_errors_only_that_item():
    crash = ("pool_probe", {"mode": "exit"}, "", None)
    with VerifierPool(workers=1, timeout_s=1.0, preload=()) as one:
        _measured(one)
        crashed, others = _between_pids(one, crash, 5)
        assert crashed.reason == "error"
        assert "while verifying (exit code 3)" in crashed.details["error"]
        assert all(v.passed for v in others)
        assert one.restarts == 1


def test_a_soft_timeout_inside_a_batch_leaves_the_rest_of_it_to_the_same_worker():
    busy = ("pool_probe", {"mode": "busy"}, "", None)
    with VerifierPool(workers=1, timeout_s=0.5, preload=()) as one:
        _measured(one)
        pid = one.worker_pids()
        timed_out, others = _between_pids(one, busy, 3)
        assert timed_out == Verdict(0.0, False, "timeout")
        assert [v.details["pid"] for v in others] == pid * 6
        assert one.restarts == 0


def test_a_pool_that_retires_on_timeout_retires_midway_and_runs_the_rest_elsewhere():
    busy = ("pool_probe", {"mode": "busy"}, "", None)
    with VerifierPool(workers=1, timeout_s=0.5, preload=(), retire_on_timeout=True) as one:
        _measured(one)
        (first,) = one.worker_pids()
        timed_out, others = _between_pids(one, busy, 3)
        assert timed_out == Verdict(0.0, False, "timeout")
        assert [v.details["pid"] for v in others[:3]] == [first] * 3
        (second,) = one.worker_pids()
        assert second != first
        assert [v.details["pid"] for v in others[3:]] == [second] * 3
        assert one.restarts == 1


def test_a_verdict_that_cannot_be_sent_back_errors_only_that_item(pool):
    _measured(pool)
    unsendable = ("pool_probe", {"mode": "unsendable"}, "", None)
    unsent, others = _between_pids(pool, unsendable, 3)
    assert "could not be sent back" in unsent.details["error"]
    assert all(v.passed for v in others)


def test_an_item_that_kills_its_worker_before_it_begins_gets_the_error_alone():
    # Nothing on the board says which item of the batch did it: the pool goes one item per
    # message for the rest of the call, so only the culprit gets the error.
    doomed = ("pool_probe", {}, "", _DiesOnArrival())
    with VerifierPool(workers=1, timeout_s=1.0, preload=()) as one:
        _measured(one)
        culprit, others = _between_pids(one, doomed, 3)
        assert culprit.reason == "error"
        assert "exited before verifying" in culprit.details["error"]
        assert all(v.passed for v in others)


def test_identical_items_are_verified_once_and_each_gets_the_verdict(pool, tmp_path):
    log = tmp_path / "runs"
    opts = {"log": str(log)}
    items = [("pool_tally", opts, c, r) for c, r in
             [("a", "x"), ("a", "x"), ("b", "x"), ("a", "x"), ("a", "y"), ("b", "x"),
              ("a", 1), ("a", 1.0), ("a", "1"), ("a", [1]), ("a", [1])]]  # fmt: skip
    before = pool.duplicates
    verdicts = pool.verify_many(items)
    # every item's own verdict, in order
    assert [(v.details["completion"], v.details["reference"]) for v in verdicts] == [
        (c, r) for _, _, c, r in items
    ]
    runs = log.read_text().splitlines()
    # a|x and b|x once each; 1, 1.0 and "1" are three references; [1] twice is one
    assert sorted(runs) == sorted(["a|'x'", "b|'x'", "a|'y'", "a|1", "a|1.0", "a|'1'", "a|[1]"])
    assert pool.duplicates - before == 4
    # another option value is another verifier: verified again
    again = pool.verify_many([("pool_tally", {"log": str(tmp_path / "other")}, "a", "x")])
    assert again[0].passed and (tmp_path / "other").read_text() == "a|'x'\n"


def test_a_verifier_that_is_not_deterministic_verifies_every_item(pool, tmp_path):
    log = tmp_path / "runs"
    verdicts = pool.verify_many([("pool_tally_each", {"log": str(log)}, "a", "x")] * 5)
    assert all(v.passed for v in verdicts)
    assert log.read_text().splitlines() == ["a|'x'"] * 5
