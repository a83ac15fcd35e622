#!/usr/bin/env bash
# On an offline GPU host with the repository copied in: install the wheelhouse (.whl), restore the
# Colossal-AI JIT kernel cache if one was carried (.device-cache/kcache.tgz; saves ~110 s of
# compiling), run the given command, and leave the cache and logs in $OUT (or ./out).
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 \
       TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
[ -f .device-cache/kcache.tgz ] && tar -xzf .device-cache/kcache.tgz -C "$HOME"
# A process killed while it JIT-loads a kernel leaves torch's build `lock` behind, and every later
# load waits on it forever (seen: a gemini run sat in "Loading the JIT-built cpu_adam_x86 kernel"
# after the previous call on the same machine was killed by its timeout).
find "$HOME/.cache/colossalai" -name lock -type f -delete 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$@"; rc=$?
tar -czf "$out/kcache.tgz" -C "$HOME" .cache/colossalai 2>/dev/null
exit $rc
