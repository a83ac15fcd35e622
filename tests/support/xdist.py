"""What a pytest-xdist worker hands its controller: one named channel per kind of session
state (the budget checks, the GPU result rows), collected and merged in one place."""

from __future__ import annotations

import json

# --- what a pytest-xdist worker hands its controller -------------------------------------------------
# name -> (collect(config): JSON-able data or None, merge(config, data)). The root conftest registers
# the budget checks, tests/conftest.py the GPU result rows; the two hooks in the root conftest
# (xdist_collect, xdist_merge) are the one transfer. JSON text: execnet sends plain types only.
XDIST_CHANNELS: dict[str, tuple] = {}


def xdist_collect(config) -> None:
    out = getattr(config, "workeroutput", None)
    if out is None:  # not an xdist worker
        return
    for name, (collect, _) in XDIST_CHANNELS.items():
        data = collect(config)
        if data is not None:
            out[name] = json.dumps(data)


def xdist_merge(node) -> None:
    got = getattr(node, "workeroutput", {})
    for name, (_, merge) in XDIST_CHANNELS.items():
        if got.get(name):
            merge(node.config, json.loads(got[name]))
