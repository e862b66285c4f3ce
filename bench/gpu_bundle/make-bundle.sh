#!/usr/bin/env bash
# Builds the packages that the offline GPU test machine lacks (Ray, vLLM and what they import)
# into chunks small enough to carry: .gpu/p1, .gpu/p2, ... in the current repository root.
# Usage: bash bench/gpu_bundle/make-bundle.sh [EXTRA_PKG==VER ...]   (run from the project root;
# bench/gpu_session.sh bundle does it with the project's extra deps)
# Extra names (the project's own runtime deps missing on the GPU image) are added as wheels.
# Takes ~10 min on 2 cores the first time; the result is cached in $CACHE.
set -euo pipefail
CACHE=${CACHE:-/tmp/gpu-bundle-cache}
ROOT=$(pwd)
mkdir -p "$CACHE/wheels" "$CACHE/build"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude

# Versions seen working together on the H100 (torch 2.11.0+cu130, Python 3.12, transformers 5.17).
PKGS="ray==2.60.0 vllm==0.26.0 annotated-types==0.8.0 apache-tvm-ffi==0.1.15.post2 astor==0.8.1 blake3==1.0.11
cachetools==8.0.1 cbor2==6.3.0 compressed-tensors==0.17.0 depyf==0.20.0 dill==0.4.1 diskcache==5.6.3 distro==1.9.0
fastapi==0.136.1 gguf==0.19.0 httpcore2==2.16.2 httpx2==2.16.2 ijson==3.6.0 importlib-metadata==10.2.0 jiter==0.19.0
jsonschema==4.26.0 jsonschema-specifications==2025.9.1 lark==1.2.2 llguidance==1.6.1 loguru==0.7.3 mistral-common==1.13.1
msgspec==0.22.0 openai==3.54.0 openai-harmony==0.0.8 opentelemetry-api==1.45.2 partial-json-parser==0.2.1.1.post7
pybase64==1.5.1 pycountry==26.2.16 pydantic==2.14.3 pydantic-core==2.50.4 pydantic-extra-types==2.11.1
python-json-logger==4.2.0 pyzmq==27.3.0 referencing==0.37.0 rpds-py==2026.9.1 setproctitle==1.3.8 sniffio==1.3.1
starlette==1.0.1 truststore==0.10.5 typing-extensions==4.16.0 typing-inspection==0.4.5 xgrammar==0.2.8 zipp==4.1.2 $*"
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d "$CACHE/wheels" $PKGS

B="$CACHE/build"; rm -rf "$B"/*; mkdir -p "$B/deps"
for w in "$CACHE"/wheels/*.whl; do
  case "$(basename "$w")" in ray-*|vllm-*) ;; *) cp "$w" "$B/deps/";; esac
done
# Ray without its Java jars and source maps; vLLM without kernels this GPU does not use
# (FlashAttention-2 and Blackwell-only kernels): both must fit the carry limit.
if [ ! -f "$CACHE/ray.tar.xz" ]; then
  rm -rf "$CACHE/ray" && mkdir -p "$CACHE/ray" && (cd "$CACHE/ray" && unzip -q "$CACHE"/wheels/ray-2.60.0-*.whl && rm -rf ray/jars && find . -name '*.js.map' -delete && tar -cf - . | xz -6 -T0 > "$CACHE/ray.tar.xz")
fi
if [ ! -f "$CACHE/vllm.tar.xz" ]; then
  rm -rf "$CACHE/vllm" && mkdir -p "$CACHE/vllm" && (cd "$CACHE/vllm" && unzip -q "$CACHE"/wheels/vllm-0.26.0-*.whl && rm -rf vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/vllm-rs vllm/third_party/fmha_sm100 vllm/third_party/deep_gemm vllm/benchmarks && tar -cf - . | xz -6 -T0 > "$CACHE/vllm.tar.xz")
fi
cp "$CACHE/ray.tar.xz" "$CACHE/vllm.tar.xz" "$B/"
(cd "$B" && tar -cf ../payload.tar ray.tar.xz vllm.tar.xz deps)
rm -rf "$ROOT/.gpu" && mkdir -p "$ROOT/.gpu"
(cd "$ROOT/.gpu" && split -b 46M -d -a 1 "$CACHE/payload.tar" part)
n=0; for f in "$ROOT"/.gpu/part*; do n=$((n+1)); mkdir -p "$ROOT/.gpu/p$n"; mv "$f" "$ROOT/.gpu/p$n/"; done
sha256sum "$CACHE/payload.tar" | cut -d' ' -f1 > "$ROOT/.gpu/p$n/SHA256"
echo "$n" > "$ROOT/.gpu/p$n/PARTS"
for d in "$ROOT"/.gpu/p*; do cp "$(dirname "$0")/stage.sh" "$d/stage.sh"; done
du -sh "$ROOT"/.gpu/p*
echo "Carry .gpu/p1 ... .gpu/p$n, one per call, back to back; call K's command starts with: bash .gpu/pK/stage.sh"
