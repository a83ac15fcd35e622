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
