#!/usr/bin/env bash
# The GPU session, ready to run: stage the bundle on the lent H100, run every GPU test, the
# step benchmark and a GRPO training run whose curve comes back for docs/.
#
# Here (the CPU machine), once:
#   bash bench/gpu_session.sh bundle        # .gpu/p1 ... .gpu/pN (~10 min the first time)
# (The .gpu/p1 ... p4 built on 2026-11-23 already hold EXTRA_DEPS below: reuse them, N = 4.)
#
# Then the device calls, back to back (the machine stays warm ~30 s after a call; a cold
# machine has lost /tmp/site and starts again from chunk 1). N = the last chunk (printed by
# `bundle`; also `ls .gpu`). The whole session is ~15 min:
#   run  carry=[".gpu/p1"]  command="bash bench/gpu_session.sh stage 1"       # seconds
#   ...  likewise 2 .. N-1
#   run  carry=[".gpu/pN"]  command="bash bench/gpu_session.sh tests"  timeout_s=600
#        # stages chunk N (installs, ~10 s), then pytest -m gpu tests/ except the training
#        # tests (engine, weight sync, tiny models, HF bf16)            -> $OUT/tests.log
#   run  command="bash bench/gpu_session.sh tests-training"  timeout_s=600
#        # pytest -m gpu tests/gpu/test_gpu_training.py (the rest of -m gpu tests/) -> $OUT/tests_training.log
#   run  command="bash bench/gpu_session.sh step"   timeout_s=600   # -> $OUT/step.json, step.log
#   run  command="bash bench/gpu_session.sh train"  timeout_s=600   # -> $OUT/train/{metrics.jsonl,curves.png,...}
# Or, in one call after staging (the async bench on GPU_SPEC, then the training tests):
#   run  carry=[".gpu/pN"]  command="DEADLINE=540 bash bench/gpu_session.sh async"  timeout_s=560
#        # -> $OUT/async_gpu.{json,log}, tests_training.log
#   (PRE_TESTS="tests/gpu/test_vllm_engine.py" runs those GPU tests first -> tests_pre.log;
#    BENCH_ARGS="--staleness 0 1 --mid-sequence" STEPS=20 adds k=1 with mid-sequence updates)
# Optional, if device time is left:
#   run  command="bash bench/gpu_session.sh step-lora"  timeout_s=600   # -> $OUT/step_lora.json
#
# Afterwards, here: copy the files from files_at: step.json -> bench/results/step_h100.json
# (step_lora.json -> step_h100_lora.json), train/{metrics.jsonl,curves.png,spec.json} ->
# docs/gpu_run/, the test logs' numbers into docs/gpu.md; hand the numbers to the lead for
# docs/benchmarks.md.
set -uo pipefail
cmd=${1:-help}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"

# The bundle: Ray + vLLM (bench/gpu_bundle/make-bundle.sh) plus the project's runtime deps that
# the GPU image lacks. The image has torch 2.11, transformers 5.17, tokenizers, peft,
# accelerate, numpy, pyarrow, matplotlib, pyyaml, psutil; if `python3 -c "import peft"`
# fails there, add peft==0.21.2 here.
EXTRA_DEPS="math-verify==0.9.0 latex2sympy2-extended==1.11.0 antlr4-python3-runtime==4.13.2
gymnasium==1.2.2 farama-notifications==0.0.6 dm-tree==0.1.10 lz4==4.4.5 ormsgpack==1.13.1
tensorboardX==2.6.5 sqlalchemy==2.1.9"

# The environment every device call needs (after staging): the bundle's site dir first.
gpu_env() {
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 \
    VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ALLOW_INSECURE_SERIALIZATION=1 VLLM_LOGGING_LEVEL=WARNING \
    RLVR_HOME=/tmp/rlvr_home TOKENIZERS_PARALLELISM=false
  if ! python3 -c "import ray, vllm, math_verify" 2>/dev/null; then
    echo "the bundle is not installed in /tmp/site (a fresh machine?): stage .gpu/p1 ... again"
    exit 3
  fi
  python3 -c "import peft" 2>/dev/null \
    || echo "peft is missing on this image: LoRA tests fail; add peft==0.21.2 to EXTRA_DEPS, rebuild"
}

last_chunk() { ls -d .gpu/p* 2>/dev/null | sed 's|.gpu/p||' | sort -n | tail -1; }

# The first command of a call that carries the last chunk: stage it (installs the bundle),
# set the environment, record the GPU.
stage_last_and_env() {
  local n
  n=$(last_chunk)
  if [ -n "$n" ] && [ -d ".gpu/p$n" ]; then
    bash ".gpu/p$n/stage.sh" | tee "$OUT/stage.log" | tail -3
    grep -q READY "$OUT/stage.log" || { echo "staging incomplete: carry every chunk first"; exit 3; }
  fi
  gpu_env
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
}

case "$cmd" in
  bundle)
    # shellcheck disable=SC2086
    bash bench/gpu_bundle/make-bundle.sh $EXTRA_DEPS
    echo "last chunk: $(last_chunk)"
    ;;
  stage)
    k=${2:?usage: gpu_session.sh stage K}
    bash ".gpu/p$k/stage.sh"
    ;;
  tests)
    stage_last_and_env
    python3 -c "import torch, transformers, peft, vllm, ray; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__)" | tee -a "$OUT/gpu.txt"
    # Modules whose test-only deps (playwright, schemathesis, docker...) are absent there
    # fail to collect; that must not stop the GPU tests. The training tests get their own
    # call (10 minutes a call).
    timeout 560 python3 -m pytest -m gpu tests/ -q -s -p no:cacheprovider \
      --continue-on-collection-errors -o addopts="-ra" \
      --ignore=tests/gpu/test_gpu_training.py 2>&1 | tee "$OUT/tests.log" | tail -40
    exit "${PIPESTATUS[0]}"
    ;;
  tests-training)
    gpu_env
    timeout 580 python3 -m pytest -m gpu tests/gpu/test_gpu_training.py -q -s \
      -p no:cacheprovider -o addopts="-ra" 2>&1 | tee "$OUT/tests_training.log" | tail -40
    exit "${PIPESTATUS[0]}"
    ;;
  async)
    # Everything in one call after the last chunk (~9 min): the async bench on the GPU spec
    # (k = 0 and 1), then the GPU training tests with the time left. DEADLINE: seconds this
    # call may take; each part gets what is left of it, and writes its files as it goes.
    deadline=$(( $(date +%s) + ${DEADLINE:-540} ))
    left() { echo $(( deadline - $(date +%s) )); }
    stage_last_and_env
    # the 25M tiny model, built and warm-started on the GPU once (cached in RLVR_HOME)
    timeout "$(left)" python3 -c "from rlvr.models import resolve_model; print(resolve_model('tiny:arithmetic?size=gpu'))" 2>&1 | tail -3
    # PRE_TESTS: GPU test files to run first (e.g. tests/gpu/test_vllm_engine.py)
    if [ -n "${PRE_TESTS:-}" ]; then
      # shellcheck disable=SC2086
      pre=$(( $(left) - 60 )); [ "$pre" -gt "${PRE_TIMEOUT:-240}" ] && pre=${PRE_TIMEOUT:-240}
      timeout "$pre" python3 -m pytest -m gpu $PRE_TESTS -q -s -p no:cacheprovider \
        -o addopts="-ra" 2>&1 | tee "$OUT/tests_pre.log" | grep -v -E "^\(|WARNING|INFO" | tail -30
    fi
    # BENCH_ARGS: the arms (default k = 0 and 1; add --mid-sequence for k = 1 with mid-sequence
    # weight updates)
    # shellcheck disable=SC2086
    timeout "$(left)" python3 bench/async.py --gpu --seeds 0 ${BENCH_ARGS:---staleness 0 1} \
      --steps ${STEPS:-30} --out "$OUT/async_gpu.json" 2>&1 | tee "$OUT/async_gpu.log" \
      | grep -v -E "^\(|WARNING|INFO" | tail -30
    echo "left for the training tests: $(left) s"
    if [ "$(left)" -gt 120 ]; then
      timeout "$(( $(left) - 10 ))" python3 -m pytest -m gpu tests/train/test_shared_prompts.py \
        tests/rollout/test_hf_engine.py tests/gpu/test_gpu_training.py -q -s --continue-on-collection-errors \
        -p no:cacheprovider -o addopts="-ra" 2>&1 | tee "$OUT/tests_training.log" | tail -30
    fi
    ;;
  step)
    gpu_env
    timeout 580 python3 bench/step.py --preset gpu --out "$OUT/step.json" 2>&1 \
      | tee "$OUT/step.log" | grep -v -E "^\(|WARNING|INFO" | tail -30
    exit "${PIPESTATUS[0]}"
    ;;
  step-lora)
    gpu_env
    timeout 580 python3 bench/step.py --preset gpu --lora-rank 16 --out "$OUT/step_lora.json" 2>&1 \
      | tee "$OUT/step_lora.log" | grep -v -E "^\(|WARNING|INFO" | tail -30
    exit "${PIPESTATUS[0]}"
    ;;
  train)
    gpu_env
    # GRPO on 2-digit addition with the 25M tiny GPU model (built + warm-started on the GPU
    # in ~30 s if the tests did not already cache it), vLLM engine sharing the GPU.
    cat > /tmp/gpu_arith.yaml <<'YAML'
name: arithmetic-gpu
model: {path: "tiny:arithmetic?size=gpu"}
data:
  train: "builtin:arithmetic?n=4000&split=train"
  eval: "builtin:arithmetic?n=400&seed=1&split=test"
  prompt_template: think
reward:
  verifiers: [{name: math, weight: 1.0}, {name: think_format, weight: 0.1}]
  workers: 8
algorithm: {estimator: grpo, group_size: 8, prompts_per_step: 32, lr: 1.0e-4, max_steps: 80,
            loss_agg: token_mean, micro_batch_tokens: 16384, seed: 0}
rollout: {engine: vllm, max_new_tokens: 64, temperature: 0.7, gpu_memory_utilization: 0.3}
checkpoint: {every: 1000}
eval: {every: 10}
YAML
    rm -rf /tmp/gpu_train
    timeout 560 python3 -m rlvr train /tmp/gpu_arith.yaml --run-dir /tmp/gpu_train 2>&1 \
      | tee "$OUT/train.log" | grep -v -E "^\(|WARNING" | tail -40
    rc=${PIPESTATUS[0]}
    mkdir -p "$OUT/train"
    # Not the checkpoints (100 MB each): the curves, metrics, samples and the spec as run.
    for f in metrics.jsonl curves.png samples.jsonl spec.json status.json; do
      [ -f "/tmp/gpu_train/$f" ] && cp "/tmp/gpu_train/$f" "$OUT/train/"
    done
    ls -la "$OUT/train"
    exit "$rc"
    ;;
  *)
    sed -n '2,27p' "$0"
    exit 2
    ;;
esac
