#!/usr/bin/env bash
# Build a wheelhouse of everything the suite needs beyond torch, for an offline GPU host.
# Usage: scripts/wheelhouse.sh [DEST=.whl] [PYTHON_VERSION=3.12] [ARCH=x86_64] [CUDA=all]
# CUDA (e.g. 13.0) keeps only that CUDA's library in the bitsandbytes wheel: colossalai merely
# imports bitsandbytes, and its libraries for six CUDA versions are 110 of the wheel's 129 MB
# unpacked (43 MB packed), which matters where the copy to the host is size-limited.
# vitcore's own wheel is built too, so that the install below puts the `vitcore` command in
# /tmp/site/bin. Install there, from the repository root, with:
#   pip install --no-index --no-deps --target /tmp/site DEST/*.whl && export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH
# The working tree comes first on PYTHONPATH, so the checkout's code wins over the wheel's copy
# (the script only imports vitcore.cli). torch is never included: use the host's own CUDA build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-.whl}
pyver=${2:-3.12}
arch=${3:-x86_64}
cuda=${4:-all}
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
# Pure-Python sdists: build wheels here without pulling torch (BUILD_EXT=0 defers kernels to JIT;
# colossalai's setup.py imports torch only to build kernels). pip builds each in an isolated
# environment with the build backend it fetches itself (setuptools and wheel), so this needs
# nothing but python3 and pip: an installed setuptools without bdist_wheel, and no `wheel`, broke
# the earlier --no-build-isolation build ("invalid command 'bdist_wheel'").
BUILD_EXT=0 python3 -m pip wheel -q --no-deps -w "$dest" colossalai==0.5.0 contexttimer==0.3.3
# vitcore itself (pure Python, the same isolated build), from a copy of what the wheel holds: an
# in-tree build would leave build/ behind, whose stale modules a later wheel would carry.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$root/pyproject.toml" "$root/README.md" "$root/vitcore" "$src/"
rm -f "$dest"/vitcore-*.whl
python3 -m pip wheel -q --no-deps -w "$dest" "$src"
if [ "$cuda" != all ]; then
  python3 - "$dest" "${cuda//./}" <<'EOF'
import pathlib, re, sys, zipfile
dest, keep = pathlib.Path(sys.argv[1]), f"libbitsandbytes_cuda{sys.argv[2]}.so"
def drop(name):
    return re.search(r"libbitsandbytes_(cuda|rocm|xpu)\w*\.so$", name) and not name.endswith(keep)
for whl in dest.glob("bitsandbytes-*.whl"):
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(whl) as src:
        names = src.namelist()
        if not any(n.endswith(keep) for n in names):
            sys.exit(f"wheelhouse: {whl.name} has no {keep}; CUDA versions in it: "
                     + ", ".join(sorted(re.findall(r"cuda(\d+)\.so", " ".join(names)))))
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for n in names:
                if drop(n):
                    continue
                data = src.read(n)
                if n.endswith(".dist-info/RECORD"):  # the installer must not look for dropped files
                    data = b"".join(l for l in data.splitlines(True) if not drop(l.split(b",")[0].decode()))
                out.writestr(src.getinfo(n), data)
    tmp.replace(whl)
    print(f"wheelhouse: {whl.name} slimmed to {keep}")
EOF
fi
du -sh "$dest"
