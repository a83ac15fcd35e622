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

# PROBE_ONLY=a,b keeps only those registry entries (`--plugins gemini` selects the whole family).
if os.environ.get("PROBE_ONLY"):
    from vitcore import plugins

    _select, _only = plugins.select, set(os.environ["PROBE_ONLY"].split(","))
    plugins.select = lambda patterns: [s for s in _select(patterns) if s.name in _only]

# GEMINI_LEFTOVER=1 (stage gemini_leftover): at each point's start, how much CUDA memory is still
# allocated and how much of it is in tensors the garbage collector can reach. (A first version also
# walked each tensor's referrers: reading attributes of colossalai's parameter tensors that way ended
# in "illegal memory access" on the H100, so it only counts.) Found with it: colossalai's class-level
# lru_caches hold the previous point's Gemini chunks (vitcore.compat.clear_memoized).
if os.environ.get("GEMINI_LEFTOVER") == "1":
    import gc

    import torch

    from vitcore import bench

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
        gc.collect()
        stores = {}
        for o in gc.get_objects():
            if type(o) is torch.Tensor and o.is_cuda:  # plain tensors only: subclasses run hooks
                s = o.untyped_storage()
                stores.setdefault(s.data_ptr(), s.nbytes())
        print(f"[probe] point start: {gib:.4f} GiB allocated, {torch.cuda.memory_reserved() / 2**30:.4f} reserved; "
              f"gc reaches {sum(stores.values()) / 2**30:.4f} GiB in {len(stores)} plain-tensor storages",
              file=sys.stderr, flush=True)

    bench._allocated_gib = _probed
