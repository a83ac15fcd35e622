"""Host time per step, explained (issue 29): from the --trace profiler window, what the host spent
per step, how much of it was blocked on the device, and which package and upstream functions took
the rest.

One profiler run serves both this and the operator table (vitcore.measure.profiling.trace): it
records Python function events (with_stack=True) beside the operators, and each profiled step is
wrapped in a `vitcore.step` annotation so that the profiler's own start and stop, and the final
synchronize, stay out of the sums.

How time is counted, per thread (the profiler nests events by time on each thread separately):
- every event's *self* time (its time minus its children's) is counted once, so the sums of one
  thread never exceed that thread's wall time;
- an operator, a CUDA runtime call or a built-in belongs to the innermost Python function above it
  (`colossalai/zero/...(123): f` issuing aten::copy_ makes the copy colossalai's host time): the
  package that wrote the call pays for it; without Python events (an older torch, a missing
  tracer) an event belongs to itself, by its name's prefix (aten::, autograd:: -> torch);
- waits on the device (cudaStreamSynchronize, aten::item, ...) are host_wait_ms_per_step, apart
  from the packages: on a faster host they do not shrink;
- on CUDA, backward runs on autograd's engine thread: the caller sits in `_engine_run_backward`
  (`<built-in method run_backward ...>`) while the engine thread does the work. That call's self
  time is a hand-off, not host work: it is left out, and the engine thread's own events count (on
  a CPU the engine runs backward on the caller's thread, nested in that call, so nothing is lost).
Host threads that the profiler does not see (gloo's, NCCL's) are not counted anywhere.

The Python tracer costs time per traced call, so profiled host time is larger than unprofiled
host time (host_ms_per_step, from the timed windows), most for Python-heavy code. A plugin and its
reference are profiled alike: the difference between them is what the report states.
"""

from __future__ import annotations

import re
from collections import defaultdict

STEP = "vitcore.step"  # the annotation around each profiled step (vitcore.measure.profiling.trace)
PACKAGES = ("colossalai", "torch", "transformers", "vitcore")  # anything else is "other"
TOP_FUNCTIONS = 8
# blocked until the device catches up (self time only: aten::item's own bookkeeping is tiny on a CPU)
WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::item",
         "aten::_local_scalar_dense")
HANDOFF = "run_backward of torch._C._EngineBase"  # the caller's side of autograd's engine thread
# operator and annotation names torch itself emits: where no Python frame owns an event
TORCH_PREFIXES = ("aten::", "autograd::", "c10d::", "cuda", "cuLaunch", "Optimizer.", "DistributedDataParallel",
                  "nn.Module", "torch", "record_param_comms", "gloo:", "nccl:", "Memcpy", "Memset",
                  "ProfilerStep", "detach", "<built-in method")
_FRAME = re.compile(r"^(?P<path>[^()<>]+\.py)\((?P<line>\d+)\): (?P<func>.+)$")
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
_SITE = re.compile(r"^.*/(?:site|dist)-packages/")

FIELDS = ("host_profiled_ms_per_step", "host_wait_ms_per_step", "host_by_package", "host_functions", "host_attribution")
# The suite's step code only dispatches (a closure, train_step, a context manager): where its own frames
# hold more than this share of the host self time, the profiler did not nest the operators under the
# frames that issued them. Seen on the H200 (torch 2.11+cu130): 'vitcore' held 69.1 of 69.2 ms/step of
# the eager reference, and colossalai 0.0 for low_level_zero. Such a split is withheld, never shown.
OWN_SHARE_LIMIT = 0.5


def package_of_path(path: str) -> str:
    """The package a source file belongs to: its first known top-level folder (site-packages
    stripped; an absolute checkout path such as /work/x/vitcore/... still finds vitcore)."""
    for part in _SITE.sub("", path).split("/"):
        if part in PACKAGES:
            return part
        if part.endswith(".py") and part[:-3] in PACKAGES:
            return part[:-3]
    return "other"


def package_of_name(name: str) -> str:
    """An event no Python frame owns, by its name (the fallback the brief calls the op prefix)."""
    low = name.lower()
    if "colossalai" in low or low.startswith("colossal"):
        return "colossalai"
    if name.startswith(STEP) or low.startswith("vitcore"):
        return "vitcore"
    if "transformers" in low:
        return "transformers"
    if name.startswith(TORCH_PREFIXES) or "torch" in low or "Tensor" in name:
        return "torch"
    return "other"


def _frame(e) -> re.Match | None:
    """A Python function's own event (file(line): name); built-ins and nn.Module spans are not."""
    return _FRAME.match(e.name) if getattr(e, "is_python_function", False) else None


def clean_name(name: str) -> str:
    """A function's name as the report shows it: object addresses dropped (so one method groups
    across objects), site-packages stripped from a path."""
    return _SITE.sub("", _ADDRESS.sub("", name))


def _in_window(events) -> tuple[float, float] | None:
    """[first step's start, last step's end] in the profiler's µs, from the step annotations."""
    spans = [e.time_range for e in events if e.name == STEP]
    if not spans:
        return None
    return min(s.start for s in spans), max(s.end for s in spans)


def summarize(events, steps: int, wall_s: float) -> dict:
    """The host fields (FIELDS) from a profiler's events (prof.events()), `steps` steps that took
    `wall_s` seconds of wall time (synchronised at the end)."""
    # imported here, not at the top: vitcore.reporting.host reads this module's rule without torch
    from torch.autograd import DeviceType

    steps = max(steps, 1)
    cpu = [e for e in events if e.device_type == DeviceType.CPU and not getattr(e, "is_async", False)]
    window = _in_window(cpu)
    if window is not None:  # the profiler's own start/stop and the closing sync stay out
        lo, hi = window
        cpu = [e for e in cpu if lo <= e.time_range.start <= hi]
    owners: dict[int, tuple[str, str]] = {}

    def owner(e) -> tuple[str, str]:
        """(function name, package) that pays for e's self time: the innermost Python frame above
        it, itself where it is one, or its own name where no frame is above it."""
        chain, node = [], e
        while node is not None and id(node) not in owners:
            m = _frame(node)
            if m:
                owners[id(node)] = (clean_name(node.name), package_of_path(m["path"]))
                break
            chain.append(node)
            node = node.cpu_parent
        found = owners.get(id(node)) if node is not None else None
        for n in chain:  # memoised: the walk up is paid once per event
            owners[id(n)] = found or (clean_name(n.name), package_of_name(n.name))
        return owners[id(e)] if chain else found

    wait_us = 0.0
    by_pkg: dict[str, float] = defaultdict(float)
    by_fn: dict[tuple[str, str], float] = defaultdict(float)
    for e in cpu:
        self_us = max(e.self_cpu_time_total, 0.0)
        if not self_us:
            continue
        if e.name.startswith(WAITS):
            wait_us += self_us
            continue
        if HANDOFF in e.name:  # counted on the engine thread, where the work ran
            continue
        fn, pkg = owner(e)
        by_pkg[pkg] += self_us
        by_fn[(fn, pkg)] += self_us
    per_step = 1e3 * steps  # µs in the window -> ms per step
    # upstream: the suite's own code (the step closure, the loop) is not what a user pays for
    top = sorted(((fn, pkg, us) for (fn, pkg), us in by_fn.items() if pkg != "vitcore"), key=lambda r: -r[2])
    failed = attribution_failure(by_pkg, sum(1 for e in cpu if _frame(e)))
    return {
        "host_profiled_ms_per_step": wall_s * 1e3 / steps,
        "host_wait_ms_per_step": wait_us / per_step,
        "host_by_package": None if failed else {pkg: round(by_pkg.get(pkg, 0.0) / per_step, 4)
                                                for pkg in (*PACKAGES, "other")},
        "host_functions": None if failed else [{"name": fn, "package": pkg, "ms_per_step": round(us / per_step, 4)}
                                               for fn, pkg, us in top[:TOP_FUNCTIONS]],
        "host_attribution": failed,
    }


def attribution_failure(by_pkg: dict[str, float], python_frames: int) -> str:
    """"" where the split by package is credible, else one line saying why it is withheld (OWN_SHARE_LIMIT)."""
    total = sum(by_pkg.values())
    own = by_pkg.get("vitcore", 0.0) / total if total else 0.0
    if own <= OWN_SHARE_LIMIT:
        return ""
    counted = f" ({python_frames} Python function events)" if python_frames >= 0 else ""
    return (f"not attributed: the suite's own frames held {own:.0%} of the host self time, so the profiler did not "
            f"nest the operators under the Python frames that issued them{counted}")

