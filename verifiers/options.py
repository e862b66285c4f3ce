"""Each verifier's options as a typed model: a bad option is an error naming it, not a crash.

Options come from job specs (``reward.verifiers[i].options``) and ``POST /v1/verify``, i.e.
from callers. The built-in verifiers validate their constructor arguments through these
models; the API validates with them before building anything, so a bad value is a 422 that
names the option. A plugin declares its own with a class attribute ``options_model`` (a
pydantic model); without one its constructor's own checks apply.

    >>> validate_options("math", {"timeout_s": -1})
    Traceback (most recent call last):
    ...
    verifiers.options.OptionsError: timeout_s: Input should be greater than 0

The bounds are what a verifier can use at all (a sandbox run of more than 4 GB or a minute
per test is not a reward); a service may hold callers to lower limits.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class _Options(BaseModel):
    # strict: no "5" -> 5 or true -> 1 coercion; a float for an int field is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MathOptions(_Options):
    timeout_s: float = Field(5.0, gt=0, le=600)
    float_rounding: int = Field(6, ge=1, le=32)
    numeric_precision: int = Field(15, ge=1, le=1000)
    strict: bool = True
    allow_set_relation_comp: bool = False
    extract: list[Literal["latex", "expr"]] = Field(["latex", "expr"], min_length=1)
    # Arithmetic tasks: an integer gold must be answered with a number, not the question's
    # own expression (which sympy would find equal).
    require_number: bool = False


class CodeOptions(_Options):
    """``sandbox`` (a Sandbox object) is a Python-only argument: not an option callers send."""

    backend: Literal["auto", "local", "docker"] = "auto"
    # The docker backend's image (default: RLVR_SANDBOX_IMAGE, else python:3.11-slim); it
    # must be present on the engine: the sandbox never pulls.
    image: str | None = Field(
        None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"
    )
    timeout_s: float = Field(2.0, gt=0, le=60)  # per test case
    memory_mb: int = Field(512, ge=16, le=4096)  # per sandbox run


class CountdownOptions(_Options):
    use_all: bool = False
    format_score: float = Field(0.0, ge=0, lt=1)


class ThinkFormatOptions(_Options):
    answer: Literal["tag", "any"] = "tag"


BUILTIN_OPTIONS: dict[str, type[BaseModel]] = {
    "math": MathOptions,
    "code": CodeOptions,
    "countdown": CountdownOptions,
    "think_format": ThinkFormatOptions,
}


class OptionsError(ValueError):
    """Bad verifier options; ``errors`` is a list of ``(option path, message)``."""

    def __init__(self, errors: list[tuple[tuple[Any, ...], str]]):
        self.errors = errors
        super().__init__(
            "; ".join(f"{'.'.join(str(p) for p in loc) or 'options'}: {msg}" for loc, msg in errors)
        )


def options_model(name: str) -> type[BaseModel] | None:
    """The options model of verifier ``name`` (``None``: it declares none)."""
    if name in BUILTIN_OPTIONS:
        return BUILTIN_OPTIONS[name]
    from verifiers.registry import _resolve

    model = getattr(_resolve(name), "options_model", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def check_options(model: type[OptionsT], options: Any) -> OptionsT:
    """``options`` validated by ``model``; :class:`OptionsError` naming each bad option."""
    if not isinstance(options, dict):
        raise OptionsError([((), f"options must be a mapping, got {type(options).__name__}")])
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise OptionsError(
            [(tuple(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        ) from None


def validate_options(name: str, options: Any) -> dict[str, Any]:
    """The options of verifier ``name`` checked (defaults filled in where it has a model)."""
    model = options_model(name)
    if model is None:
        if not isinstance(options, dict):
            raise OptionsError([((), "options must be a mapping")])
        return dict(options)
    return check_options(model, options).model_dump(exclude_unset=True)
