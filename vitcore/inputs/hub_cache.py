"""The Hugging Face caches as this process's environment names them now, the hub snapshots in them,
and how a hub dataset id is looked up (vitcore.inputs.data's lookup order; weights: vitcore.inputs.model).

huggingface_hub, datasets and transformers read $HF_HOME, $HF_HUB_CACHE and $HF_DATASETS_CACHE once,
when they are imported. vitcore reads them at each call (a launcher or a test may set them later),
passes the folder it found to the library explicitly, and names that folder in the result's source.

A hub snapshot is what `huggingface-cli download ORG/NAME` (or a copied hub cache) leaves:
HUB/{datasets,models}--ORG--NAME/snapshots/<rev>/..., usually links into ../../blobs/, with
refs/main naming the revision the hub's main branch had.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from vitcore import DataError


def hub_cache_dir() -> Path:
    """$HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants  # the default ($XDG_CACHE_HOME/huggingface/hub)

    return Path(constants.HF_HUB_CACHE)


def datasets_cache_dir() -> Path:
    """The datasets library's prepared cache: $HF_DATASETS_CACHE, else $HF_HOME/datasets, else its default."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "datasets"
    # datasets / huggingface_hub: ~2 s to import, only when a hub cache is consulted
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE)


def hub_offline_by_env() -> bool:
    """$HF_HUB_OFFLINE as huggingface_hub parses it, read now."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    revision: str
    path: Path

    def __str__(self) -> str:  # what a result's source names
        return f"{self.repo_id}@{self.revision} (hub snapshot {self.path})"


def repo_folder(repo_id: str, repo_type: str) -> Path:
    """repo_type: dataset | model."""
    return hub_cache_dir() / f"{repo_type}s--{repo_id.replace('/', '--')}"


def find_snapshot(repo_id: str, repo_type: str) -> Snapshot | None:
    """The snapshot refs/main names, else the only one there is; None when the cache holds none.

    A snapshot that cannot be used is a ValueError naming the folder and what is missing: refs/main
    naming a revision that is not there, several revisions and no refs/main to choose one, or a file
    whose blob is missing (a snapshots/ folder copied without blobs/).
    """
    repo = repo_folder(repo_id, repo_type)
    snapshots, ref = repo / "snapshots", repo / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if not (snapshots / rev).is_dir():
            raise ValueError(f"hub cache folder {repo}: refs/main names revision {rev!r} but "
                             f"snapshots/{rev} is missing")
    else:
        revs = sorted(p.name for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
        if not revs:
            return None
        if len(revs) > 1:
            raise ValueError(f"hub cache folder {repo} holds snapshots {', '.join(revs)} and no refs/main "
                             "naming the one to use")
        rev = revs[0]
    path = snapshots / rev
    broken = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_symlink() and not p.exists())
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise ValueError(f"hub snapshot {path}: {broken[0]}{more} links to a missing blob; copy the whole "
                         f"{repo.name} folder, blobs/ included")
    return Snapshot(repo_id, rev, path)


# --- a hub dataset, in vitcore.inputs.data's lookup order ---------------------------------------------------
def load_hub_dataset(repo_id: str):
    """(DatasetDict, source): 1. the datasets library (the hub when reachable, else its prepared
    cache); 2. with the hub unreachable or offline, the hub snapshot's data files loaded directly."""
    # datasets / huggingface_hub: ~2 s to import, only when a hub cache is consulted
    import datasets

    offline = hub_unreachable()
    cache = datasets_cache_dir()
    try:
        dd = datasets.load_dataset(repo_id, cache_dir=str(cache))
    except Exception as e:  # datasets raises many types here; all mean "not available"
        if not offline:
            raise DataError(f"dataset {repo_id!r} is not available from the hub or the HF cache: "
                            f"{_first_line(e)}") from None
        return _load_snapshot(repo_id, f"not in the datasets cache {cache} ({_first_line(e)})")
    if not offline:
        return dd, f"hf-hub:{repo_id}"
    files = [f["filename"] for ds in dd.values() for f in ds.cache_files]
    return dd, f"hf-datasets-cache:{repo_id} ({Path(files[0]).parent if files else cache})"


def _load_snapshot(repo_id: str, not_cached: str):
    # datasets / huggingface_hub: ~2 s to import, only when a hub cache is consulted
    import datasets

    try:
        snap = find_snapshot(repo_id, "dataset")
    except ValueError as e:
        raise DataError(f"dataset {repo_id!r}: {e}") from None
    if snap is None:
        raise DataError(f"dataset {repo_id!r} is not available offline (hub unreachable or HF_HUB_OFFLINE): "
                        f"{not_cached}, and no hub snapshot in {repo_folder(repo_id, 'dataset')}")
    if not any(f.is_file() and f.name not in ("README.md", ".gitattributes") for f in snap.path.rglob("*")):
        raise DataError(f"hub snapshot {snap.path} holds no data files (dog_food's are "
                        "data/train-*.parquet and data/test-*.parquet)")
    try:
        with no_progress_bars():  # the datasets library reads README.md's configs and split sizes
            dd = datasets.load_dataset(str(snap.path), cache_dir=str(datasets_cache_dir()))
    except Exception as e:  # noqa: BLE001 - datasets raises many types for an unreadable folder
        raise DataError(f"hub snapshot {snap.path} cannot be loaded: {_splits_problem(e)}") from None
    return dd, f"hf-snapshot:{snap}"


def _splits_problem(e: Exception) -> str:
    """datasets' check of the splits README.md declares, in one line."""
    if type(e).__name__ == "ExpectedMoreSplitsError":
        return f"README.md declares split(s) {e} that have no data files (an incomplete copy?)"
    infos = [_split_info(m) for m in re.findall(r"SplitInfo\(([^)]*)\)", str(e))] \
        if type(e).__name__ == "NonMatchingSplitsSizesError" else []
    if infos and len(infos) % 2 == 0:  # expected, recorded, expected, recorded, ...
        return "; ".join(f"split {want[0]!r} has {got[1]} rows where README.md declares {want[1]}"
                         for want, got in zip(infos[::2], infos[1::2], strict=True))
    return f"{type(e).__name__}: {_first_line(e)}"


def _split_info(text: str) -> tuple[str, int]:
    """(name, num_examples) of a SplitInfo's repr, which leaves out fields at their default (0)."""
    name, rows = re.search(r"name='([^']*)'", text), re.search(r"num_examples=(\d+)", text)
    return (name.group(1) if name else "?"), int(rows.group(1)) if rows else 0


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def hub_unreachable() -> bool:
    """True when the hub is not to be asked: HF_HUB_OFFLINE (at import or now) or no connection in
    2 s; then the libraries are put in offline mode, which stops a minute of retries."""
    # datasets / huggingface_hub: ~2 s to import, only when a hub cache is consulted
    import datasets.config
    import huggingface_hub.constants as hfc

    if not (hfc.HF_HUB_OFFLINE or hub_offline_by_env()):
        try:
            socket.create_connection(("huggingface.co", 443), timeout=2).close()
            return False
        except OSError:
            pass
    hfc.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    return True


@contextlib.contextmanager
def no_progress_bars():
    """datasets' progress bars off (an error after one would not be the one line on stderr)."""
    # datasets / huggingface_hub: ~2 s to import, only when a hub cache is consulted
    import datasets

    was = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            datasets.enable_progress_bars()
