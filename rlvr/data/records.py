"""The unit of training data (:class:`PromptRecord`) and the error a bad source raises."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass
class PromptRecord:
    """One prompt and what a verifier needs to score its completions.

    Attributes:
        prompt: the user's message (the template adds the system prompt and chat markup).
        reference: what the verifier compares against: the gold answer as a string for
            ``math``, ``{"numbers": [...], "target": n}`` for ``countdown``, a dict of tests
            for ``code``.
        verifier: the verifier for this row only; ``None`` means the job's reward verifiers.
        id: a stable name for the row (shown with samples), e.g. ``arithmetic-s0-17``.
    """

    prompt: str
    reference: Any
    verifier: str | None = None
    id: str = ""


class DataError(ValueError):
    """A data source that cannot be used, naming where and what to fix.

    ``row`` is 1-based (for ``.jsonl`` files, the line number) or ``None`` for a problem
    with the source as a whole; ``field`` is the column or query parameter at fault.
    """

    def __init__(self, source: str, row: int | None, field: str | None, message: str):
        self.source = source
        self.row = row
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source
        if self.row is not None:
            where += f", row {self.row}"
        if self.field:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"

    def __reduce__(self) -> tuple[type[DataError], tuple[str, int | None, str | None, str]]:
        # keep the fields when pickled across processes (Ray, pools)
        return (type(self), (self.source, self.row, self.field, self.message))


def split_bucket(key: str, buckets: int = 20) -> int:
    """A stable bucket in ``[0, buckets)`` for a problem key (independent of any seed).

    Built-in generators use it to keep the ``test`` split disjoint from ``train``, whatever
    the seeds: a problem's split is a property of the problem itself.
    """
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


# Buckets of split_bucket(): "test" = {0, 1} (10%), "train" = the rest. Inside "train",
# bucket 2 is held back by the tiny models' warm start to decide when to stop.
TEST_BUCKETS = frozenset({0, 1})
WARM_START_VALID_BUCKET = 2
SPLITS = ("all", "train", "test")


def in_split(key: str, split: str) -> bool:
    if split == "all":
        return True
    is_test = split_bucket(key) in TEST_BUCKETS
    return is_test if split == "test" else not is_test
