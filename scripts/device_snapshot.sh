#!/usr/bin/env bash
# Builds .snap/, the folder a lent GPU call carries (`carry: [".snap"]`; docs/gpu.md), from this checkout:
# the wheelhouse (scripts/wheelhouse.sh), Debian's Fashion-MNIST for the stand-in's stages, the code, and the
# files earlier calls returned. Each call's carried copy replaces the machine's, so a run continued with
# --resume needs the last call's results.tgz unpacked here first (seen 2026-12-04: a run started over).
#   bash scripts/device_snapshot.sh [/work/.device/N/results.tgz ...] [/work/.device/N/kcache.tgz]
# Then, in the call: cd .snap && VITCORE_FASHION_MNIST=$PWD/scripts/deb/root/usr/share/datasets/fashion-mnist \
#   bash scripts/device_run.sh bash scripts/gpu_stages.sh STAGE ...
set -euo pipefail
cd "$(dirname "$0")/.."
snap=.snap
limit=$((64 * 1024 * 1024))
for f in "$@"; do  # every argument checked before anything is written
  case "$(basename "$f")" in
    *.tgz) [ -f "$f" ] || { echo "device_snapshot: $f: no such file" >&2; exit 2; } ;;
    *) echo "device_snapshot: $f: not a results .tgz or kcache.tgz (valid: the files a device call returned)" >&2; exit 2 ;;
  esac
done
mkdir -p "$snap/.device-cache" .git/info
grep -qxF '/.snap/' .git/info/exclude 2>/dev/null || echo '/.snap/' >> .git/info/exclude
[ -n "$(ls "$snap"/.whl/*.whl 2>/dev/null)" ] || bash scripts/wheelhouse.sh "$snap/.whl" 3.12 x86_64 13.0
fm="$snap/scripts/deb/root/usr/share/datasets/fashion-mnist"
if [ ! -d "$fm" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q dataset-fashion-mnist >/dev/null)
  mkdir -p "$snap/scripts/deb/root" && dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$snap/scripts/deb/root"
  rm -rf "$tmp"
fi
# the code as committed or edited here, fresh each time (the data, wheels, cache and results stay)
for d in vitcore tests fixtures docs; do rm -rf "${snap:?}/$d"; done
find "$snap/scripts" -maxdepth 1 -type f -delete
cp -r vitcore tests conftest.py fixtures scripts pyproject.toml README.md docs tox.ini "$snap/"
for f in "$@"; do
  case "$(basename "$f")" in
    kcache.tgz) cp "$f" "$snap/.device-cache/kcache.tgz" ;;  # Colossal-AI's JIT kernels (device_run.sh restores it)
    *) tar -xzf "$f" -C "$snap" ;;  # reports/<kind>/<run>/ and fixtures/: what --resume and later stages read
  esac
done
carried=$(du -sb "$snap" | cut -f1)
# tracked files that are here (reports/ may be set aside for the call: du skips what is missing)
tracked=$( (git ls-files -z | du -cb --files0-from=- 2>/dev/null || true) | tail -1 | cut -f1)
echo "device_snapshot: .snap $((carried / 1048576)) MiB + tracked files $((tracked / 1048576)) MiB of the 64 MiB a call carries"
if [ $((carried + tracked)) -ge "$limit" ]; then
  echo "device_snapshot: over the limit: move reports/ aside for the call (mv reports /tmp/reports-hold) or carry less" >&2
  exit 1
fi
