#!/usr/bin/env bash
# Render the views of every committed run: report.html, points.json, points.csv, summary.md and the
# PNGs that `vitcore report` writes from a run's points.jsonl. The views are not committed (they are
# regenerated from the points; issue 26 item 10): this is the one command that brings them back.
#
# Usage: bash scripts/render_reports.sh [DEST] [RUN_FOLDER...]
#   DEST        default reports/latest-views/ (ignored by git): DEST/<kind>/<date>-<sha>/... mirrors reports/
#   RUN_FOLDER  only these runs (folders under reports/ holding a points.jsonl); default: every committed one
#   PYTHON      the interpreter with vitcore's dependencies (default python3); JOBS: renders at a time
# Exit 1, naming each folder, if any run fails to render. A run whose verdicts regress against its
# baseline (an injected slowdown must) still renders: `vitcore report` exits 1 there, which is evidence.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$(realpath -m "${1:-$ROOT/reports/latest-views}")  # resolved before the cd: a relative DEST is the caller's
shift $(( $# > 0 ? 1 : 0 ))
runs=()
for r in "$@"; do runs+=("$(realpath -m --relative-to="$ROOT" "$r")"); done  # also the caller's paths
cd "$ROOT"  # budgets (fixtures/budgets) and the baselines below are repository-relative paths
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vitcore renders, not an installed copy

if [[ "$DEST" == "$ROOT/reports" ]]; then
  echo "render_reports: DEST must not be reports/ itself: the views would land beside the committed evidence" >&2
  exit 2
fi

# Baselines the committed views were rendered against. A check's bench command named a `record/` copied
# into its folder for the run and not committed (546c4d3, adfdb87, ec15cc5: copies of a5d47fc/record,
# rendered byte-identical from it); e78dfbd's and a5d47fc's checks were re-rendered after the fact.
A5=reports/h100-gate/2026-11-25-a5d47fc/record/points.jsonl
baseline_flags() {
  case "$1" in
    reports/h100-gate/2026-11-25-3aea74f/check-gemini) echo "--baseline $A5 --allow-missing" ;;  # gemini points only
    reports/h100-gate/2026-11-25-3aea74f/host-inject-*)
      echo "--baseline reports/h100-gate/2026-11-25-3aea74f/host-record/points.jsonl" ;;
    reports/h100-gate/2026-11-25-a5d47fc/check1 | reports/h100-gate/2026-11-25-546c4d3/check[123] | \
      reports/h100-gate/2026-11-25-adfdb87/check2 | reports/h100-gate/2026-11-26-ec15cc5/check[123])
      echo "--baseline $A5" ;;
    reports/h100-gate/2026-11-25-e78dfbd/check1)
      echo "--baseline reports/h100-gate/2026-11-25-e78dfbd/record/points.jsonl" ;;
    reports/h100-gate/2026-11-25-e78dfbd/check2 | reports/h100-gate/2026-11-25-e78dfbd/inject-*)  # subsets of it
      echo "--baseline reports/h100-gate/2026-11-25-e78dfbd/record/points.jsonl --allow-missing" ;;
    *)  # a run not listed: the baseline its bench command compared against, which must be committed
      "$PYTHON" - "$1/points.jsonl" <<'EOF'
import json, os, shlex, sys

line = next((l for l in open(sys.argv[1]) if l.strip()), "{}")
cmd = shlex.split(json.loads(line).get("command") or "")
flags = []
for i, word in enumerate(cmd):
    if word == "--compare" and i + 1 < len(cmd):
        if not os.path.isfile(cmd[i + 1]):
            sys.exit(f"its bench command compared against {cmd[i + 1]}, which is not in the tree: "
                     "add the run to baseline_flags in scripts/render_reports.sh")
        flags += ["--baseline", cmd[i + 1]]
    elif word in ("--allow-missing", "--strict"):
        flags.append(word)
print(" ".join(flags) if "--baseline" in flags else "")
EOF
      ;;
  esac
}

render_one() {  # RUN_FOLDER: its views into DEST/<path under reports/>; console output in render.log there
  local run=$1 out="$DEST/${1#reports/}" flags rc=0
  flags=$(baseline_flags "$run") || return 1
  [[ -f "$run/finetune.json" ]] && flags+=" --history $run/finetune.json"  # the fine-tuning chart
  rm -rf "$out" && mkdir -p "$out" || return 1  # fresh: a stale report.html must not pass for this one
  # shellcheck disable=SC2086  # flags: words with no spaces, split on purpose
  "$PYTHON" -m vitcore.cli report "$run/points.jsonl" --out "$out" $flags >"$out/render.log" 2>&1 || rc=$?
  if [[ $rc -eq 1 && -f "$out/report.html" ]] && grep -q "REGRESSIONS against" "$out/render.log"; then
    rc=0  # the gate's verdict, with the report written; a crash (also exit 1) writes no such line
  fi
  [[ $rc -eq 0 && -f "$out/report.html" ]]
}

if (( ${#runs[@]} == 0 )); then
  mapfile -t runs < <(git ls-files -- 'reports/*points.jsonl' | xargs -r -n1 dirname | sort -u)
fi
(( ${#runs[@]} )) || { echo "render_reports: no run folders found" >&2; exit 1; }

pids=() failed=()
collect() {  # wait for the oldest render still running
  local i=$1
  if wait "${pids[i]}"; then echo "rendered ${runs[i]}"; else failed+=("${runs[i]}"); fi
}
for i in "${!runs[@]}"; do
  run=${runs[i]}
  if [[ "$run" != reports/* || ! -f "$run/points.jsonl" ]]; then
    echo "render_reports: $run is not a run folder under reports/ with a points.jsonl" >&2
    failed+=("$run"); pids[i]=""; continue
  fi
  render_one "$run" & pids[i]=$!
  # keep at most JOBS renders running (each is one python process importing matplotlib)
  for (( j = 0; j < i - JOBS + 1; j++ )); do [[ -n "${pids[j]:-}" ]] && { collect "$j"; pids[j]=""; }; done
done
for j in "${!pids[@]}"; do [[ -n "${pids[j]}" ]] && collect "$j"; done

if (( ${#failed[@]} )); then
  for run in "${failed[@]}"; do
    echo "render_reports: FAILED $run (log: $DEST/${run#reports/}/render.log)" >&2
    tail -n 5 "$DEST/${run#reports/}/render.log" 2>/dev/null | sed 's/^/    /' >&2 || true
  done
  exit 1
fi
echo "render_reports: ${#runs[@]} runs rendered into $DEST"
