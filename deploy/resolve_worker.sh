#!/usr/bin/env bash
# Check, without Docker, that the worker image's pins resolve together: torch, vLLM, Ray,
# psycopg and the project's own dependencies, for the image's Python and glibc (Ubuntu 24.04:
# manylinux up to 2.39). A pip dry run; it downloads the wheels it cannot read metadata from
# (vLLM, torch: about 1 GB), so it is a manual check, not part of `make test`.
#
#   deploy/resolve_worker.sh            # exit 0 and "Would install ..." when the pins agree
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
eval "$("$PY" - <<'EOF'
import importlib.util, shlex, tomllib
spec = importlib.util.spec_from_file_location("render", "deploy/render.py")
render = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render)
for key, value in render.load_versions().items():
    print(f"{key}={shlex.quote(value)}")
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("PROJECT_DEPS=(" + " ".join(shlex.quote(d) for d in deps if not d.startswith(("torch", "ray"))) + ")")
EOF
)"
platforms=()
for minor in $(seq 17 39); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
"$PY" -m pip install --dry-run --ignore-installed --only-binary=:all: "${platforms[@]}" \
    --platform manylinux2014_x86_64 --platform linux_x86_64 \
    --python-version "$PYTHON_VERSION" --target "$(mktemp -d)" \
    "torch==$TORCH_VERSION" "vllm==$VLLM_VERSION" "ray[default,rllib]==$RAY_VERSION" \
    "psycopg[binary]==$PSYCOPG_VERSION" "${PROJECT_DEPS[@]}"
