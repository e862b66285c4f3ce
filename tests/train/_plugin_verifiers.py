"""Verifiers that misbehave on purpose, for the reward pool's tests (imported by its workers)."""

from __future__ import annotations

import time

from verifiers import Verdict, Verifier, register_verifier


@register_verifier("test_sleepy")
class SleepyVerifier(Verifier):
    description = "sleeps when the completion says 'sleep', else passes"
    reference_format = "anything"

    def verify(self, completion, reference):
        if "sleep" in completion:
            time.sleep(30)
        return Verdict(1.0, True, "ok")


@register_verifier("test_crashy")
class CrashyVerifier(Verifier):
    description = "kills its process when the completion says 'crash'"
    reference_format = "anything"

    def verify(self, completion, reference):
        if "crash" in completion:
            import os

            os._exit(3)
        return Verdict(0.5, False, "half")
