"""The repository stands on its own and its design document matches the code.

- no tracked file cites a design document other than docs/design.md, or a path outside the
  repository (a markdown link that climbs out of it, a sibling checkout, a scratch dir);
- the layering rules of docs/design.md hold for every module's imports;
- the job-spec table of docs/design.md lists every field of ``rlvr.config.JobSpec`` with the
  model's own type, default and bounds (``python scripts/job_spec_table.py --write``);
- its metric table names every metric the loop and the learner write.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"

# Spelled in pieces so that this file does not match itself.
_OLD_DESIGN = "DESIGN" + ".md"
_OUTSIDE = ("../" + "shared", "/tmp/" + "rules", "/work/" + "shared")
_MD_LINK = re.compile(r"\]\(([^)\s#]+)")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    files = []
    for name in filter(None, out.split("\0")):
        path = REPO / name
        if name.startswith("deploy/crds/") or not path.is_file():
            continue  # vendored upstream files; a file deleted in the working tree
        try:
            files.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # binary (images)
    return files


@pytest.fixture(scope="module")
def tracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    return _tracked_text_files()


def test_no_file_cites_a_design_document_outside_docs(tracked):
    hits = [
        f"{p.relative_to(REPO)}:{n}"
        for p, text in tracked
        for n, line in enumerate(text.splitlines(), 1)
        if _OLD_DESIGN in line
    ]
    assert not hits, f"cite docs/design.md (with its section) instead: {hits}"


def test_no_file_refers_to_a_path_outside_the_repository(tracked):
    hits = []
    for path, text in tracked:
        for n, line in enumerate(text.splitlines(), 1):
            hits += [f"{path.relative_to(REPO)}:{n}: {s}" for s in _OUTSIDE if s in line]
            if path.suffix == ".md":
                for target in _MD_LINK.findall(line):
                    if "://" in target or target.startswith("mailto:"):
                        continue
                    resolved = (path.parent / target).resolve()
                    if not resolved.is_relative_to(REPO):
                        hits.append(f"{path.relative_to(REPO)}:{n}: link {target}")
    assert not hits, f"the repository must stand on its own: {hits}"


def _imported_roots(package: str) -> dict[str, set[str]]:
    """Module file -> top-level names it imports (anywhere in it, lazy imports included)."""
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = roots
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sandbox", {"rlvr", "verifiers", "torch", "ray"}),
        ("verifiers", {"rlvr", "torch", "ray"}),
        ("rlvr/tools", {"torch", "ray", "transformers"}),  # tools run beside any engine
    ],
)
def test_layering_rules_hold(package, forbidden):
    bad = {f: sorted(r & forbidden) for f, r in _imported_roots(package).items() if r & forbidden}
    assert not bad, (
        f"{package} must not import {sorted(forbidden)} (docs/design.md, Layering): {bad}"
    )


def _spec_table_script():
    spec = importlib.util.spec_from_file_location(
        "job_spec_table", REPO / "scripts/job_spec_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_design_doc_job_spec_table_matches_the_pydantic_model():
    script = _spec_table_script()
    documented = script.table_in(DESIGN.read_text(encoding="utf-8"))
    generated = {r["field"]: r for r in script.spec_rows()}
    fix = "run `python scripts/job_spec_table.py --write` and describe new fields"
    assert set(documented) == set(generated), (
        f"docs/design.md lists {sorted(set(documented) - set(generated))} that JobSpec lacks "
        f"and lacks {sorted(set(generated) - set(documented))}: {fix}"
    )
    stale = [
        f"{name}.{col}: doc {documented[name][col]!r}, model {row[col]!r}"
        for name, row in generated.items()
        for col in ("type", "default", "bounds")
        if documented[name][col] != row[col]
    ]
    assert not stale, f"stale job-spec rows in docs/design.md: {stale}; {fix}"
    undescribed = [name for name, row in documented.items() if not row["meaning"]]
    assert not undescribed, f"job-spec fields without a meaning in docs/design.md: {undescribed}"


def test_spec_table_reads_back_what_it_writes():
    script = _spec_table_script()
    rows = script.spec_rows()
    table = script.render(rows)
    assert script.table_in(table) == {r["field"]: r for r in rows}
    assert any(r["field"] == "reward.verifiers[].weight" for r in rows)
    assert next(r for r in rows if r["field"] == "algorithm.group_size")["bounds"] == "≥ 2, ≤ 1024"


def _section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_design_doc_names_every_metric_the_loop_and_the_learner_write():
    from rlvr.train.update import LEARNER_METRICS

    written = set(LEARNER_METRICS) | {"accuracy"}
    for module in ("loop.py", "evaluate.py"):  # the step's own metrics, spelled as literals
        tree = ast.parse((REPO / "rlvr" / "train" / module).read_text(encoding="utf-8"))
        written |= {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"[a-z_]+(/[a-z_@0-9]+)+", node.value)
        }
    table = _section(DESIGN.read_text(encoding="utf-8"), "Metric names")
    missing = sorted(name for name in written if f"`{name}`" not in table)
    assert len(written) > 20 and not missing, (
        f"docs/design.md, Metric names, lacks {missing}: name and explain each there"
    )
