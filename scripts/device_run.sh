#!/usr/bin/env bash
# On an offline GPU host with the repository copied in: install the wheelhouse (.whl), restore the
# Colossal-AI JIT kernel cache if one was carried (.device-cache/kcache.tgz; saves ~110 s of
# compiling), run the given command, and leave the cache and logs in $OUT (or ./out).
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# The checkout before the wheelhouse (its code wins over the vitcore wheel's copy); the wheel's
# `vitcore` script (scripts/wheelhouse.sh builds it) on PATH, as the README's setup line puts it.
export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 \
       TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# Freshly installed sources are newer than the cached objects, and ninja would rebuild every kernel
# (2 min per call, measured). Safe only because the wheelhouse pins colossalai (its kernel sources
# never change) and the cache folder's name carries the torch and CUDA versions.
find /tmp/site/colossalai -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) \
  -exec touch -d 2000-01-01 {} +
[ -f .device-cache/kcache.tgz ] && tar -xzf .device-cache/kcache.tgz -C "$HOME"
# A process killed while it JIT-loads a kernel leaves torch's build `lock` behind, and every later
# load waits on it forever (seen: a gemini run sat in "Loading the JIT-built cpu_adam_x86 kernel"
# after the previous call on the same machine was killed by its timeout).
find "$HOME/.cache/colossalai" -name lock -type f -delete 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$@"; rc=$?
tar -czf "$out/kcache.tgz" -C "$HOME" .cache/colossalai 2>/dev/null
exit $rc
