"""POST /v1/jobs rejects bad specs with a 422 whose body names the field and says why."""

from __future__ import annotations

import pytest

BIG = {"prompts_per_step": 4096, "group_size": 16}

# (case id, spec, field path after "body", a phrase the message must contain)
BAD_SPECS = [
    ("negative lr", {"algorithm": {"lr": -1e-5}}, "algorithm.lr", "greater than 0"),
    ("absurd lr", {"algorithm": {"lr": 50.0}}, "algorithm.lr", "less than or equal to 1"),
    (
        "group of one",
        {"algorithm": {"group_size": 1}},
        "algorithm.group_size",
        "greater than or equal to 2",
    ),
    (
        "zero steps",
        {"algorithm": {"max_steps": 0}},
        "algorithm.max_steps",
        "greater than or equal to 1",
    ),
    ("unknown estimator", {"algorithm": {"estimator": "ppo"}}, "algorithm.estimator", "grpo"),
    ("clip_low of 1", {"algorithm": {"clip_low": 1.0}}, "", "clip_low must be < 1"),
    (
        "absurd batch",
        {"algorithm": {"prompts_per_step": 65536, "group_size": 64}},
        "algorithm.prompts_per_step",
        "completions per step",
    ),
    (
        "absurd tokens per step",
        {"algorithm": BIG, "rollout": {"max_new_tokens": 131072}},
        "rollout.max_new_tokens",
        "new tokens per step",
    ),
    (
        "warmup past the end",
        {"algorithm": {"warmup_steps": 500, "max_steps": 10}},
        "algorithm.warmup_steps",
        "exceeds max_steps",
    ),
    (
        "negative temperature",
        {"rollout": {"temperature": -0.5}},
        "rollout.temperature",
        "greater than or equal to 0",
    ),
    ("typo at the top", {"algoritm": {"lr": 1e-5}}, "algoritm", "Extra inputs are not permitted"),
    (
        "typo inside",
        {"algorithm": {"lrr": 1e-5}},
        "algorithm.lrr",
        "Extra inputs are not permitted",
    ),
    ("unsafe name", {"name": "../../evil"}, "name", "letters, digits"),
    (
        "unknown verifier",
        {"reward": {"verifiers": [{"name": "chess"}]}},
        "reward.verifiers.0.name",
        "unknown verifier 'chess'",
    ),
    (
        "verifier option",
        {"reward": {"verifiers": [{"name": "math", "options": {"bogus": 1}}]}},
        "reward.verifiers.0.options.bogus",
        "not permitted",
    ),
    ("no verifiers", {"reward": {"verifiers": []}}, "reward.verifiers", "at least 1"),
    ("model outside roots", {"model": {"path": "/etc"}}, "model.path", "outside the model roots"),
    (
        "model missing",
        {"model": {"path": "./nope"}},
        "model.path",
        "not found under the model roots",
    ),
    (
        "model without config",
        {"model": {"path": "./no-config"}},
        "model.path",
        "without config.json",
    ),
    ("unknown tiny model", {"model": {"path": "tiny:chess"}}, "model.path", "unknown tiny model"),
    ("bad tiny parameter", {"model": {"path": "tiny:arithmetic?seed=x"}}, "model.path", "seed"),
    (
        "model not in the HF cache",
        {"model": {"path": "acme/no-such-model"}},
        "model.path",
        "not in the local Hugging Face cache",
    ),
    (
        "data path escape",
        {"data": {"train": "../../../../etc/passwd.jsonl"}},
        "data.train",
        "outside the data roots",
    ),
    (
        "data beside the root",
        {"data": {"train": "../outside.jsonl"}},
        "data.train",
        "outside the data roots",
    ),
    ("data missing", {"data": {"train": "missing.jsonl"}}, "data.train", "not found"),
    ("malformed row", {"data": {"train": "bad.jsonl"}}, "data.train", "row 3"),
    (
        "row without reference",
        {"data": {"train": "noref.jsonl"}},
        "data.train",
        "row 2, field 'reference'",
    ),
    ("bad builtin parameter", {"data": {"train": "builtin:arithmetic?n=-5"}}, "data.train", "'n'"),
    ("unknown builtin", {"data": {"eval": "builtin:chess"}}, "data.eval", "unknown built-in"),
    # found by the OpenAPI fuzzer: a NUL made the path checks raise (a 500)
    ("NUL in the model", {"model": {"path": "XN|>\u0000T"}}, "model.path", "NUL"),
    ("NUL in a data path", {"data": {"train": "/tmp/a\u0000.jsonl"}}, "data.train", "NUL"),
    (
        "NUL in a list",
        {"model": {"lora": {"target_modules": ["q\u0000"]}}},
        "model.lora.target_modules",
        "NUL",
    ),
]


@pytest.mark.parametrize(
    "spec,field,phrase", [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS]
)
def test_bad_spec_is_rejected_naming_the_field(http, spec, field, phrase):
    r = http.post("/v1/jobs", json={"name": "bad", **spec})
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    locs = [".".join(str(p) for p in e["loc"][1:]) for e in errors]
    assert all(e["loc"][0] == "body" for e in errors)
    assert field in locs, f"no error at {field!r}: {errors}"
    msg = next(e["msg"] for e, loc in zip(errors, locs, strict=True) if loc == field)
    assert phrase in msg, f"{phrase!r} not in {msg!r}"


def test_table_has_at_least_fifteen_bad_specs():
    assert len(BAD_SPECS) >= 15


def test_several_problems_are_reported_together(http):
    r = http.post(
        "/v1/jobs",
        json={
            "reward": {"verifiers": [{"name": "chess"}]},
            "model": {"path": "/etc"},
            "data": {"train": "missing.jsonl"},
        },
    )
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert {("body", "reward", "verifiers", 0, "name"), ("body", "model", "path"),
            ("body", "data", "train")} <= locs  # fmt: skip


@pytest.mark.parametrize(
    "body,ctype,phrase",
    [
        (b"name: [unclosed", "application/yaml", "not valid YAML"),
        (b'{"name": ', "application/json", "not valid JSON"),
        (b"- a\n- list\n", "application/yaml", "must be a mapping"),
        (b"", "application/json", "must be a mapping"),
    ],
    ids=["yaml syntax", "json syntax", "not a mapping", "empty body"],
)
def test_unparseable_body_is_a_422_not_a_500(http, body, ctype, phrase):
    r = http.post("/v1/jobs", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 422
    assert phrase in r.json()["detail"][0]["msg"]


def test_good_yaml_spec_is_queued_with_data_paths_made_absolute(http, settings):
    text = "name: ok\ndata: {train: good.jsonl, eval: null}\nalgorithm: {max_steps: 3}\n"
    r = http.post("/v1/jobs", content=text, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    job = http.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "queued"
    assert job["spec"]["data"]["train"] == str((settings.data_roots[0] / "good.jsonl").resolve())
    assert job["spec"]["algorithm"]["max_steps"] == 3
