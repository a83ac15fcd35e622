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
    from vitcore.spec import plugins

    _select, _only = plugins.select, set(os.environ["PROBE_ONLY"].split(","))
    plugins.select = lambda patterns: [s for s in _select(patterns) if s.name in _only]

# GEMINI_LEFTOVER=1 (stage gemini_leftover): at each point's start, how much CUDA memory is still
# allocated and how much of it is in tensors the garbage collector can reach. (A first version also
# walked each tensor's referrers: reading attributes of colossalai's parameter tensors that way ended
# in "illegal memory access" on the H100, so it only counts.) Found with it: colossalai's class-level
# lru_caches kept the previous Gemini model alive (vitcore.processes.compat.clear_memoized), and NCCL held its
# chunks' memory beyond that (vitcore.measure.timing.settle_collectives).
if os.environ.get("GEMINI_LEFTOVER") == "1":
    import gc

    import torch

    from vitcore.measure import bench

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
        if gib < 0.1:
            return
        # Which of colossalai's objects are still alive, and who refers to them. Only type() and
        # gc.get_referrers() touch them: attribute reads on its parameter tensors run its hooks.
        wanted = ("GeminiDDP", "GeminiOptimizer", "GeminiManager", "ChunkManager", "HybridAdam", "Booster",
                  "GeminiPlugin", "OptimizerWrapper", "ModelWrapper", "Setup", "LambdaLR")
        alive = [o for o in gc.get_objects() if type(o).__name__ in wanted]
        counts = {}
        for o in alive:
            counts[type(o).__name__] = counts.get(type(o).__name__, 0) + 1
        print(f"[probe] alive: {counts}", file=sys.stderr, flush=True)
        for o in alive:
            if type(o).__name__ in ("GeminiDDP", "GeminiOptimizer", "ChunkManager"):
                print(f"[probe] {type(o).__name__} <- {_chain(o, 7, {id(alive)})[:1500]}", file=sys.stderr, flush=True)

    def _chain(obj, depth, seen):
        """Referrers of obj up to `depth` levels (no comprehension or slice here: each would add a
        cell or list of this walk's own to the referrers it reports)."""
        import types

        if depth == 0:
            return "..."
        raw = gc.get_referrers(obj)
        seen.add(id(raw))
        parts = []
        seen.add(id(parts))
        for r in raw:
            if len(parts) == 4:
                break
            if id(r) in seen or isinstance(r, types.FrameType) or type(r).__name__ == "list_iterator":
                continue
            seen.add(id(r))
            name = type(r).__module__ + "." + type(r).__qualname__
            if type(r) is dict:
                keys = []
                for k, v in r.items():
                    if v is obj:
                        keys.append(k)
                if "__builtins__" in r:  # a module's globals: the root
                    parts.append(f"globals of {r.get('__name__')}{keys}")
                    continue
                name += str(keys[:2])
            elif type(r) in (list, tuple):
                name += f"(len {len(r)})"
            if type(r) is types.ModuleType or isinstance(r, torch.Tensor):
                parts.append(name)
            else:
                parts.append(f"{name} <- {_chain(r, depth - 1, seen)}")
        del raw
        return "{" + " | ".join(parts) + "}" if parts else "(no gc-visible referrer: a C++ root)"

    bench._allocated_gib = _probed
