"""A verifier that reports which environment variables its process sees (imported by the
test and, by module name, inside the service's verifier pool workers)."""

from __future__ import annotations

import os
from typing import Any

from verifiers import Verdict, Verifier, register_verifier


@register_verifier("env_probe")
class EnvProbeVerifier(Verifier):
    description = "test only: lists the environment variable names of the verifying process"
    reference_format = "anything"
    deterministic = False  # its verdict says which process ran it

    def verify(self, completion: str, reference: Any) -> Verdict:
        return Verdict(1.0, True, "ok", {"env": sorted(os.environ), "pid": os.getpid()})
