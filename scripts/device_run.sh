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
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$@"; rc=$?
tar -czf "$out/kcache.tgz" -C "$HOME" .cache/colossalai 2>/dev/null
exit $rc
