"""Finding: numbers without sane ceilings were accepted (eval.max_new_tokens 10**12,
checkpoint.keep 10**9, reward.workers 256, rollout.replicas / num_learners 1024, seed 10**100,
long seeds in tiny: model names, builtin:...?n=1000000 costing 25-29 s of API CPU). Each is
now bounded by what a run can use, and refused (422 naming the field) cheaply."""

from __future__ import annotations

import pytest

from tests.security.conftest import client, make_settings, serve

CASES = [
    ({"eval": {"max_new_tokens": 10**12}}, ["eval", "max_new_tokens"]),
    ({"checkpoint": {"keep": 10**9}}, ["checkpoint", "keep"]),
    ({"reward": {"workers": 256}}, ["reward", "workers"]),
    ({"rollout": {"replicas": 1024}}, ["rollout", "replicas"]),
    ({"algorithm": {"num_learners": 1024}}, ["algorithm", "num_learners"]),
    ({"algorithm": {"seed": 10**100}}, ["algorithm", "seed"]),
    ({"algorithm": {"seed": -1}}, ["algorithm", "seed"]),
    ({"model": {"path": "tiny:arithmetic?seed=" + "9" * 200}}, ["model", "path"]),
    ({"data": {"train": "builtin:arithmetic?n=1000000"}}, ["data", "train"]),
    ({"data": {"eval": "builtin:arithmetic?n=1000000"}}, ["data", "eval"]),
    ({"data": {"train": "builtin:arithmetic?seed=" + "7" * 60}}, ["data", "train"]),
]


@pytest.fixture(scope="module")
def http(tmp_service):
    with serve(make_settings(tmp_service)) as server, client(server) as c:
        yield c


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize(("extra", "loc"), CASES, ids=[".".join(loc) for _, loc in CASES])
def test_an_absurd_number_is_refused_naming_its_field(http, small_spec, extra, loc):
    r = http.post("/v1/jobs", json=_merge(small_spec, extra))
    assert r.status_code == 422, r.text
    locs = [e["loc"][1:] for e in r.json()["detail"]]
    assert any(found[: len(loc)] == loc for found in locs), locs


def test_the_same_spec_within_bounds_is_accepted(http, small_spec):
    r = http.post("/v1/jobs", json=small_spec)
    assert r.status_code == 201, r.text
