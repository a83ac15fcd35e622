"""Experiment hook (scripts/gpu_stages.sh stage gemini_async): with GEMINI_ASYNC_REDUCE=0 in the
environment, every GeminiPlugin this interpreter builds gets enable_async_reduce=False (colossalai's
default is True: gradient chunks reduced on a side stream). Put this folder first on PYTHONPATH;
spawned workers inherit the variable and run this file at start-up too. A no-op without the variable."""

import os
import sys

if os.environ.get("GEMINI_ASYNC_REDUCE") in ("0", "1"):
    from colossalai.booster.plugin import gemini_plugin

    _init = gemini_plugin.GeminiPlugin.__init__
    _async = os.environ["GEMINI_ASYNC_REDUCE"] == "1"

    def _patched(self, *args, **kwargs):
        kwargs["enable_async_reduce"] = _async
        print(f"[probe] GeminiPlugin(enable_async_reduce={_async})", file=sys.stderr, flush=True)
        _init(self, *args, **kwargs)

    gemini_plugin.GeminiPlugin.__init__ = _patched

# GEMINI_LEFTOVER=1 (stage gemini_leftover): at each point's start, where CUDA memory is still
# allocated from an earlier point, name what holds it: the CUDA tensors the garbage collector can
# reach, largest storages first, each with the chain of objects that refer to it. PROBE_ONLY=a,b
# keeps only those registry entries (`--plugins gemini` selects the whole family).
if os.environ.get("GEMINI_LEFTOVER") == "1":
    import gc

    import torch

    from vitcore import bench, plugins

    if os.environ.get("PROBE_ONLY"):
        _select, _only = plugins.select, set(os.environ["PROBE_ONLY"].split(","))
        plugins.select = lambda patterns: [s for s in _select(patterns) if s.name in _only]

    def _owner(obj, seen, depth):
        """Type names up the referrer chain, skipping frames and this probe's own containers."""
        if depth == 0:
            return "..."
        refs = [r for r in gc.get_referrers(obj) if id(r) not in seen and not hasattr(r, "f_code")]
        if not refs:
            return "(no gc-visible referrer)"
        parts = []
        for r in refs[:3]:
            seen.add(id(r))
            name = type(r).__qualname__
            if isinstance(r, dict):
                keys = [k for k, v in r.items() if v is obj][:2]
                name += f"[{keys}]" if keys else ""
            parts.append(f"{name} <- {_owner(r, seen, depth - 1)}")
        return " | ".join(parts)

    _allocated = bench._allocated_gib

    def _probed():
        gib = _allocated()
        if gib is not None:
            try:
                _describe(gib)
            except Exception as e:  # noqa: BLE001 - a probe never ends the measurement
                print(f"[probe] failed: {e!r}", file=sys.stderr, flush=True)
        return gib

    def _describe(gib):
        tensors = []
        gc.collect()
        for o in gc.get_objects():
            try:
                if isinstance(o, torch.Tensor) and o.is_cuda:
                    tensors.append(o)
            except Exception:  # noqa: BLE001 - half-built objects
                pass
        stores = {}
        for t in tensors:
            s = t.untyped_storage()
            stores.setdefault(s.data_ptr(), (s.nbytes(), t))
        reach = sum(n for n, _ in stores.values()) / 2**30
        print(f"[probe] point start: {gib:.4f} GiB allocated, {torch.cuda.memory_reserved() / 2**30:.4f} reserved; "
              f"gc reaches {len(tensors)} CUDA tensors, {reach:.4f} GiB in {len(stores)} storages",
              file=sys.stderr, flush=True)
        if gib > 0.01:
            seen = {id(tensors), id(stores)}
            for nbytes, t in sorted(stores.values(), key=lambda x: -x[0])[:6]:
                print(f"[probe]   {nbytes / 2**20:.1f} MiB {t.dtype} {tuple(t.shape)}: {_owner(t, seen, 5)[:800]}",
                      file=sys.stderr, flush=True)
        del tensors, stores

    bench._allocated_gib = _probed
