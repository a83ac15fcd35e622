#!/usr/bin/env bash
# Build a wheelhouse of everything the suite needs beyond torch, for an offline GPU host.
# Usage: scripts/wheelhouse.sh [DEST=.whl] [PYTHON_VERSION=3.12] [ARCH=x86_64]
# Install there with:
#   pip install --no-index --no-deps --target /tmp/site DEST/*.whl && export PYTHONPATH=/tmp/site:$PWD
# torch is never included: use the host's own CUDA build.
set -euo pipefail
dest=${1:-.whl}
pyver=${2:-3.12}
arch=${3:-x86_64}
mkdir -p "$dest"
# Binary wheels, pinned to the versions in the compat notes (docs/compat.md).
binary=(
  transformers==4.51.3 tokenizers==0.21.4 huggingface_hub==0.36.2 datasets==4.8.5
  peft==0.13.2 galore-torch==1.0 bitsandbytes==0.50.2 dill==0.4.0 multiprocess==0.70.18
  pytest-html==4.1.1 pytest-metadata==3.1.1 pytest-timeout==2.4.0
)
plats=()
for n in 17 24 27 28 31 34; do plats+=(--platform "manylinux_2_${n}_${arch}"); done
plats+=(--platform "manylinux2014_${arch}" --platform any)
for req in "${binary[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp "${plats[@]}" -d "$dest" "$req"
done
# Pure-Python sdists: build wheels here without pulling torch (BUILD_EXT=0 defers kernels to JIT).
BUILD_EXT=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w "$dest" colossalai==0.5.0 contexttimer==0.3.3
du -sh "$dest"
