"""The registry: built-ins by name, @register_verifier, discoverable descriptions, and the
layering rule (verifiers import without torch or Ray)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from verifiers import Verdict, Verifier, get_verifier, list_verifiers, register_verifier
from verifiers.registry import UnknownVerifierError


def test_builtins_are_listed_with_description_and_reference_format():
    infos = {i.name: i for i in list_verifiers()}
    for name in ("math", "think_format", "countdown"):
        assert infos[name].description and infos[name].reference_format
        assert get_verifier(name).name == name


def test_register_verifier_adds_a_verifier_by_name():
    @register_verifier("registry_test_always")
    class Always(Verifier):
        description = "always passes"
        reference_format = "ignored"

        def verify(self, completion, reference):
            return Verdict(1.0, True, "ok")

    assert get_verifier("registry_test_always").verify("", None).passed
    assert "registry_test_always" in {i.name for i in list_verifiers()}
    with pytest.raises(TypeError, match="needs a Verifier subclass"):
        register_verifier("registry_test_bad")(object)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownVerifierError) as info:
        get_verifier("definitely_not_a_verifier")
    assert "known verifiers:" in str(info.value) and "math" in str(info.value)


def test_verifiers_import_without_torch_or_ray():
    code = (
        "import sys, verifiers, verifiers.math, verifiers.pool, verifiers.countdown, "
        "verifiers.think_format\n"
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
