"""The job spec's ``tools`` section: off by default, validated naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rlvr.config import JobSpec
from rlvr.tools.protocol import Markers
from rlvr.tools.runner import ToolsConfig


def test_off_by_default():
    spec = JobSpec()
    assert spec.tools.enabled == []
    assert ToolsConfig.from_spec(spec.tools).enabled == []


def test_a_full_section_becomes_the_engine_config():
    spec = JobSpec.model_validate(
        {
            "tools": {
                "enabled": ["python", "calculator"],
                "max_turns": 3,
                "max_output_tokens": 64,
                "timeout_s": 2.5,
                "markers": {"call_close": "</call>"},
            }
        }
    )
    config = ToolsConfig.from_spec(spec.tools)
    assert config.enabled == ["python", "calculator"]
    assert (config.max_turns, config.max_output_tokens, config.timeout_s) == (3, 64, 2.5)
    assert config.markers == Markers(call_close="</call>")


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"enabled": ["pyhton"]}, "tools.enabled: unknown tool 'pyhton'; known tools: "),
        ({"enabled": ["python", "python"]}, "tools.enabled lists a tool twice"),
        ({"max_turns": 0}, "greater than or equal to 1"),
        ({"timeout_s": 0}, "greater than 0"),
        ({"markers": {"call_close": ""}}, "at least 1 character"),
        ({"markers": {"call_open": "{name}{name}"}}, "at most once"),
        (
            {"enabled": ["python", "calculator"], "markers": {"call_open": "```python\n"}},
            "tools.markers.call_open needs {name}",
        ),
        ({"max_turn": 2}, "Extra inputs are not permitted"),
    ],
)
def test_bad_sections_name_the_field(tools, message):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"tools": tools})
    text = str(info.value)
    assert message in text
    assert "tools" in text


def test_the_vllm_engine_config_carries_the_tools_but_vllm_does_not_see_them():
    from rlvr.rollout.vllm import VllmEngineConfig

    spec = JobSpec.model_validate({"tools": {"enabled": ["calculator"], "max_turns": 2}})
    cfg = VllmEngineConfig.from_spec(spec, "/models/x")
    assert cfg.tools is not None and cfg.tools.max_turns == 2
    assert "tools" not in cfg.llm_kwargs()
    assert VllmEngineConfig.from_spec(JobSpec(), "/models/x").tools is None
