"""A stand-in for a third-party package nobody has listed: it makes noise on every channel a real one
uses, with a mark no real package prints, so that the console rule is tested without knowing any
real message (bitsandbytes logs one only on CPUs with AVX512-BF16).

`install()` (run at interpreter start by the sitecustomize that tests/test_console_rule.py writes, so
spawned workers get it too) hooks imports:
- the first import of torch, matplotlib or colossalai in a process (the heavy-import phase): a
  `logging` record of an unknown logger, one of a logger with its own StreamHandler (as colossalai's),
  one of the root logger, a Python warning, and raw writes: print, sys.stderr, os.write to fds 1 and 2;
- vitcore.training.train.finetune and vitcore.measure.bench.measure_group (the run): the records and the warning; in a
  spawned worker the raw writes too (the parent routes raw writes only while it imports).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import multiprocessing
import os
import sys
import warnings

MARK = "zz-unknown-pkg"
HEAVY = ("torch", "matplotlib", "colossalai")
RUN = {"vitcore.training.train": "finetune", "vitcore.measure.bench": "measure_group"}
_made = set()


def noise(phase: str, *, raw: bool) -> None:
    logging.getLogger("zz_unknown_pkg").warning("%s %s: a record of an unknown logger", MARK, phase)
    own = logging.getLogger("zz_unknown_pkg.own")
    if not own.handlers:  # a library's own handler, bound to the stderr of this moment
        own.addHandler(logging.StreamHandler())
        own.propagate = False
    own.warning("%s %s: a record through its own StreamHandler", MARK, phase)
    logging.warning("%s %s: a record of the root logger", MARK, phase)
    warnings.warn(f"{MARK} {phase}: a warning", UserWarning, stacklevel=1)
    if raw:
        print(f"{MARK} {phase}: a print", flush=True)
        sys.stderr.write(f"{MARK} {phase}: a write to sys.stderr\n")
        sys.stderr.flush()
        os.write(1, f"{MARK} {phase}: os.write to fd 1\n".encode())
        os.write(2, f"{MARK} {phase}: os.write to fd 2\n".encode())


def _in_worker() -> bool:
    return multiprocessing.parent_process() is not None


def _after(name: str, module) -> None:
    if name in HEAVY and not _made & set(HEAVY):
        _made.add(name)
        noise(f"import {name}", raw=True)
    if name in RUN:
        fn = getattr(module, RUN[name])

        @functools.wraps(fn)
        def noisy(*args, **kwargs):
            noise(f"run {RUN[name]}", raw=_in_worker())
            return fn(*args, **kwargs)

        setattr(module, RUN[name], noisy)


class _Hook(importlib.abc.MetaPathFinder):
    busy = False

    def find_spec(self, name, path, target=None):
        if self.busy or (name not in HEAVY and name not in RUN):
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _after(name, module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


def environ(folder) -> dict:
    """os.environ for a subprocess of the CLI with the noise installed in every process (a
    sitecustomize in `folder`, first on PYTHONPATH; spawned workers inherit it) and TMPDIR in
    folder/tmp, so that a log left there is seen."""
    from pathlib import Path

    folder = Path(folder)
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text("import tests.support.third_party_noise\ntests.support.third_party_noise.install()\n")
    root = str(Path(__file__).resolve().parents[2])  # tests/support/ -> the checkout
    path = [str(folder), root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    # torch's inductor cache: importing dynamo (transformers' flex-attention module does) creates it under
    # TMPDIR unless it is set, and a pytest process that imported dynamo first has set it for its children:
    # set here, so that whether a run left a file in TMPDIR does not depend on the tests that ran before
    return os.environ | {"PYTHONPATH": os.pathsep.join(path), "TMPDIR": str(folder / "tmp"),
                         "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor-cache")}
