#!/usr/bin/env bash
# The GPU measurements committed under reports/, as named stages, so that one device call runs
# several and each stays inside a call's time limit. Run through scripts/device_run.sh:
#   bash scripts/device_run.sh bash scripts/gpu_stages.sh ablate correctness
# Results land in reports/<kind>/$RUN/ (RUN=<date>-<sha> unless the caller sets it: set the same RUN
# on every call that continues one run; kinds: $DEV, $DEV-ablation, $DEV-trace, $DEV-noise,
# $DEV-gate, gpu, multigpu-x<N>; DEV=h100 unless set) and in fixtures/budgets, and are packed into
# $OUT/results.tgz with one log per stage: a device call returns at most 8 files. Which of them are
# committed, with a line in reports/README.md on what each proves, is decided afterwards.
# pytest stages are stopped with SIGINT (then KILL 30 s later): pytest treats it as Ctrl-C and still
# writes its pytest-html report of the tests that finished (a SIGTERM lost a whole run's report).
# `perf` measures 9 entries one after another (~8 minutes): give it a device call of its own.
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
py=python3
MATRIX=(--batch-sizes 8,32,64,128 --steps 15 --repeats 5 --warmup 5)
FAST_A=torch_ddp,torch_ddp_fp16,low_level_zero,hybrid_parallel,torch_fsdp
STUDY=torch_ddp,torch_ddp_fp16,low_level_zero_s1,gemini,hybrid_parallel,torch_fsdp

stage_ablate() {  # each fast-profile option flipped, batch 128 (docs/performance.md)
  timeout 550 $py -m vitcore.cli bench --ablate --plugins torch_ddp_fp16,low_level_zero_s1,hybrid_parallel,gemini,torch_fsdp \
    --batch-sizes 128 --steps 10 --repeats 3 --warmup 5 --out "reports/$DEV-ablation/$RUN" --resume
}
stage_correctness() {  # parity and checkpoints: tiny preset, 4 tests at a time on the GPU (~5 min)
  mkdir -p "reports/gpu/$RUN"
  timeout -s INT -k 30 450 $py -m pytest -m gpu -k "parity or checkpoint" -n 4 -p no:cacheprovider -q -rA \
    --results-out "reports/gpu/$RUN" --html "reports/gpu/$RUN/pytest-parity-checkpoint.html" --self-contained-html
}
stage_convergence() {  # 10 epochs of the tiny preset per case (~4 min); CONV_K=EXPR reruns a subset
  mkdir -p "reports/gpu/$RUN"
  timeout -s INT -k 30 300 $py -m pytest -m gpu -k "${CONV_K:-convergence}" -n 4 -p no:cacheprovider -q -rA \
    --results-out "reports/gpu/$RUN" --html "reports/gpu/$RUN/pytest-convergence${CONV_K:+-rerun}.html" --self-contained-html
}
stage_correctness_rest() {  # what the first pass did not reach, and the fp16 checkpoint with its loss scale
  mkdir -p "reports/gpu/$RUN"
  timeout -s INT -k 30 300 $py -m pytest -m gpu -n 3 -p no:cacheprovider -q -rA --results-out "reports/gpu/$RUN" \
    -k "(test_convergence and (hybrid or fsdp)) or (test_checkpoint_roundtrip and torch_ddp_fp16)" \
    --html "reports/gpu/$RUN/pytest-correctness-rest.html" --self-contained-html
}
stage_transfer_thresholds() {  # issue 30: the plain loop's transfer thresholds on this GPU, per precision, recorded
  # into fixtures/transfer-thresholds.json for stage_pretrained to read (16 seeds, ~70 s a precision on an H200)
  mkdir -p "reports/$DEV/$RUN"
  for p in fp32 bf16 fp16; do
    timeout 200 $py scripts/transfer_thresholds.py --device cuda --precision $p --seeds "$(seq -s, 42 57)" \
      --out "reports/$DEV/$RUN/transfer-thresholds-cuda-$p.json" --record fixtures/transfer-thresholds.json || return 1
  done
}
stage_pretrained() {  # issue 30: the stand-in's weights survive boosting, and transfer (3 seeds a case), per single-GPU entry
  # (tests/test_pretrained.py; the vit-tiny stand-in is made first on the CPU, ~10 s)
  # PRE_K=EXPR reruns a subset (e.g. the cases a killed run did not reach) into reports/gpu/$RUN-rest
  local dir="reports/gpu/$RUN${PRE_K:+-rest}"; mkdir -p "$dir"
  timeout -s INT -k 30 450 $py -m pytest tests/test_pretrained.py -m gpu ${PRE_K:+-k "$PRE_K"} -n 4 -p no:cacheprovider -q -rA \
    --results-out "$dir" --html "$dir/pytest-pretrained.html" --self-contained-html
}
stage_compile_tier() {  # issue 29: parity, checkpoint and convergence with every entry compiled (each case must
  # capture a graph); what admits an entry's compiled form to the fast profile (~4 min)
  mkdir -p "reports/gpu/$RUN-compile"
  timeout -s INT -k 30 "${TIER_T:-540}" $py -m pytest -m gpu --compile -k "parity or checkpoint or convergence" \
    -p no:cacheprovider -q -rA --results-out "reports/gpu/$RUN-compile" \
    --html "reports/gpu/$RUN-compile/pytest-compile.html" --self-contained-html
}
stage_compile_side() {  # issue 29: each family eager and compiled beside the references (HF and timm, eager and
  # compiled) at bs128 and 512 in one run (--resume continues it in a second call); an OOM is a result.
  # --trace: each point's host time (vitcore.measure.host_profile) from a profiled window after its timed ones
  timeout "${BEST_T:-560}" $py -m vitcore.cli bench --ablate compile --trace \
    --plugins torch_ddp_fp16,low_level_zero_s1,hybrid_parallel,torch_fsdp,gemini --batch-sizes 128,512 --warmup 5 \
    --steps 10 --repeats 3 --min-window 0.3 --out "reports/$DEV/$RUN-compile" --resume
}
stage_finetune_standin() {  # issue 30: the study's chart, gemini 10 epochs on Fashion-MNIST's 3 held-out classes from
  # the vit-base stand-in (pre-trained on the other 7 by `vitcore pretrain`) beside the same run from random init
  mkdir -p "reports/$DEV/$RUN"
  [ -d /tmp/fm3 ] || $py scripts/photo_folder.py /tmp/fm3 >/dev/null || return 1
  [ -d /tmp/standin-vit-base ] || timeout 400 $py -m vitcore.cli pretrain --out /tmp/standin-vit-base --model vit-base \
    --device cuda || return 1
  for w in /tmp/standin-vit-base random; do
    timeout 300 $py -m vitcore.cli train --plugin gemini --model vit-base --dataset /tmp/fm3 --weights "$w" --epochs 10 \
      --batch-size 32 --out "reports/$DEV/$RUN/finetune-$(basename "$w").json" || return 1
  done
}
stage_finetune() {  # the study's fine-tuning: gemini, 10 epochs (embedded data offline)
  timeout 300 $py -m vitcore.cli train --plugin gemini --model vit-base --epochs 10 --batch-size 32 \
    --out "reports/$DEV/$RUN/finetune.json"
}
stage_fast_a() {
  timeout 560 $py -m vitcore.cli bench --profile fast --plugins $FAST_A "${MATRIX[@]}" \
    --out "reports/$DEV/$RUN" --resume --update-budgets fixtures/budgets
}
stage_fast_b() {
  timeout 560 $py -m vitcore.cli bench --profile fast --plugins gemini,torch_fsdp --no-reference "${MATRIX[@]}" \
    --out "reports/$DEV/$RUN" --resume --update-budgets fixtures/budgets
}
# The GPU tier's performance tests, in one pytest process (-n 0: the tier's default of 4 workers would only
# wait on the exclusive GPU lock): TIMEOUT HTML-NAME K-EXPRESSION [pytest args]
perf_tests() {
  local t=$1 html=$2 k=$3; shift 3
  mkdir -p "reports/gpu/$RUN"
  timeout -s INT -k 30 "$t" $py -m pytest -m gpu -k "$k" -n 0 -p no:cacheprovider -q -rA --perf-steps 15 --perf-repeats 5 \
    --results-out "reports/gpu/$RUN" --html "reports/gpu/$RUN/$html" --self-contained-html "$@"
}
stage_perf_record() {  # recording this device's budgets
  perf_tests 540 pytest-performance-record.html performance --update-budgets
}
stage_perf_rest() {  # budgets for the entries a killed perf_record did not reach
  perf_tests 200 pytest-performance-record-rest.html "performance and (hybrid or fsdp or gemini_offload)" --update-budgets
}
stage_perf() {  # against the budgets just recorded (~8 minutes: a device call of its own)
  perf_tests 540 pytest-performance.html performance
}
stage_perf_tail() {  # the performance tests a killed `perf` stage did not reach
  perf_tests 120 pytest-performance-tail.html "performance and (hybrid or fsdp)"
}
# The study profile (shorter windows than the fast matrix: device time), in a folder of its own: --resume
# reuses points only under the same settings (run.json) and would set the fast matrix aside: TIMEOUT
study_bench() {
  timeout "$1" $py -m vitcore.cli bench --profile study --plugins $STUDY --no-reference \
    --batch-sizes 8,32,64,128 --steps 10 --repeats 3 --warmup 3 --out "reports/$DEV/$RUN-study" --resume
}
stage_study_short() { study_bench 330; }
stage_study() { study_bench 560; }  # with --resume: the points study_short did not reach
stage_gemini_fast() {
  timeout 300 $py -m vitcore.cli bench --profile fast --plugins gemini --no-reference "${MATRIX[@]}" \
    --out "reports/$DEV/$RUN" --resume
}
# issue 17: each family's best fast point beside the references (HF and timm, eager and compiled) at the
# larger batches, in one run (two calls: --resume continues it): an OOM is a result
stage_best() {
  timeout "${BEST_T:-560}" $py -m vitcore.cli bench --plugins torch_ddp_fp16,low_level_zero_s1,hybrid_parallel,torch_fsdp,gemini \
    --batch-sizes 128,256,512 --warmup 5 --steps 10 --repeats 3 --min-window 0.3 --out "reports/$DEV/$RUN-best" --resume
}
stage_trace() {  # what limits each plugin: torch.profiler over 5 steps at bs128, gpu_busy per point (~4 min)
  timeout 330 $py -m vitcore.cli bench --trace --plugins torch_ddp_fp16,low_level_zero_s1,hybrid_parallel,gemini \
    --no-reference --batch-sizes 128 --steps 5 --repeats 2 --min-window 0 --out "reports/$DEV-trace/$RUN" --resume
}
stage_trace_check() {  # the kernel-only gpu_busy (timing.kernel_seconds) on one point, against the trace stage
  timeout 150 $py -m vitcore.cli bench --trace --plugins torch_ddp_fp16 --no-reference --batch-sizes 128 --steps 5 \
    --repeats 2 --min-window 0 --out "reports/$DEV-trace/$RUN-check" --resume
}
stage_multigpu() {  # several-GPU kinds: parity and per-GPU budgets at every size up to the GPU count
  local n sizes
  n=$(nvidia-smi -L | wc -l); sizes=$(seq -s, 2 2 "$n" | sed 's/,6//'); mkdir -p "reports/multigpu-x$n/$RUN"
  timeout -s INT -k 30 540 $py -m pytest -m multigpu --world-sizes "$sizes" -p no:cacheprovider -q -rA --update-budgets \
    --results-out "reports/multigpu-x$n/$RUN" --html "reports/multigpu-x$n/$RUN/pytest-multigpu.html" --self-contained-html
}
stage_scaling() {  # the scaling study: per-GPU throughput and efficiency against one GPU
  local n; n=$(nvidia-smi -L | wc -l)
  timeout 560 $py -m vitcore.cli bench --nproc "$(seq -s, 1 1 "$n" | awk -F, '{for(i=1;i<=NF;i++) if($i==1||$i==2||$i==4||$i==8) printf "%s%s", (c++?",":""), $i}')" \
    --plugins torch_ddp_fp16,low_level_zero_s1,gemini,hybrid_parallel,hybrid_parallel_tp2,torch_fsdp \
    --batch-sizes 32,128 --out "reports/multigpu-x$n/$RUN" --resume --update-budgets fixtures/budgets
}
stage_noise() {  # where host-bound points' noise comes from: fresh runs, unpinned and pinned to CPUs 2-5
  local i v pin
  for i in 1 2 3; do
    for v in all pin4; do
      pin=(); [ "$v" = pin4 ] && pin=($py scripts/pin.py 2,3,4,5)
      timeout 150 "${pin[@]}" $py -m vitcore.cli bench --plugins torch_ddp_fp16,low_level_zero_s1 --no-reference \
        --batch-sizes 32 --repeats 9 --out "reports/$DEV-noise/$RUN/$v-$i"
    done
  done
}
stage_noise_gc() {  # the same, each window's GC, CPU and clock recorded: automatic GC against freeze_gc=true
  local i
  for i in 1 2 3; do
    timeout 150 $py -m vitcore.cli bench --plugins torch_ddp_fp16,low_level_zero_s1 --no-reference \
      --batch-sizes 32 --repeats 9 --out "reports/$DEV-noise/$RUN/gc-auto-$i"
    timeout 150 $py -m vitcore.cli bench --plugins torch_ddp_fp16,low_level_zero_s1 --no-reference \
      --batch-sizes 32 --repeats 9 --option freeze_gc=true --out "reports/$DEV-noise/$RUN/gc-frozen-$i"
  done
}
stage_demo() {  # a budget file edited to demand 20% more throughput must fail, naming the point
  rm -rf /tmp/edited && mkdir -p /tmp/edited "reports/gpu/$RUN"
  $py - <<'EOF'
import json, pathlib
for f in pathlib.Path("fixtures/budgets").glob("*.json"):
    book = json.loads(f.read_text())
    for e in book["entries"].values():
        if e["images_per_s"] is not None:  # entries with a throughput baseline
            e["images_per_s"] *= 1.2
    pathlib.Path("/tmp/edited", f.name).write_text(json.dumps(book, indent=1))
EOF
  # one token each: a bare path argument would make pytest take /tmp/edited as its rootdir
  timeout -s INT -k 30 120 $py -m pytest tests/test_gpu.py -m gpu -k performance --plugin=torch_ddp --budgets=/tmp/edited \
    -p no:cacheprovider -q -rA --perf-steps 10 --perf-repeats 3 > "reports/gpu/$RUN/budget-edited-20pct.log" 2>&1
  echo "edited-budget run exit code $? (1 = failed as it must)" | tee -a "reports/gpu/$RUN/budget-edited-20pct.log"
  tail -n 25 "reports/gpu/$RUN/budget-edited-20pct.log"
}

# --- the gate (docs/gate.md): budgets with device time, launches, memory and wall samples for the 9
# single-GPU entries at bs32 and bs128, then checks of unchanged code and injected regressions.
# GATE=reports/$DEV-gate/$RUN unless the caller sets it (the same on every call of one gate run).
GATE_BENCH=(--batch-sizes 32,128 --no-reference --warmup 5 --steps 10 --repeats 5 --min-window 0.3)
stage_gate_smoke() {  # one point end to end, fails fast before the long stages
  timeout 200 $py -m vitcore.cli bench --plugins torch_ddp_fp16 --batch-sizes 32 --no-reference --steps 5 \
    --repeats 3 --min-window 0 --out "/tmp/gate-smoke" && cat /tmp/gate-smoke/points.csv
}
stage_gate_record() {  # the budgets: every point in GATE_PROCS processes (default 2: memory budgets take the maximum over processes, and gemini bs128 has two states; ~10 minutes of device time for 18 points in one process)
  timeout "${GATE_T:-590}" $py -m vitcore.cli bench "${GATE_BENCH[@]}" --processes "${GATE_PROCS:-2}" --out "$GATE/record" --resume \
    --update-budgets fixtures/budgets
}
stage_fast_record() {  # budgets of the entries whose fast profile changed (FAST_RECORD, default: the plugin options
  # measured better in reports/h100-leads: low_level_zero overlap_communication=False, hybrid flash attention)
  timeout "${GATE_T:-400}" $py -m vitcore.cli bench "${GATE_BENCH[@]}" --plugins "${FAST_RECORD:-low_level_zero,hybrid_parallel}" \
    --processes "${GATE_PROCS:-2}" --out "$GATE/record-fast" --resume --update-budgets fixtures/budgets
}
stage_gate_check() {  # unchanged code against the record, a separate process: GATE_RUN names it
  timeout "${GATE_T:-400}" $py -m vitcore.cli bench "${GATE_BENCH[@]}" --out "$GATE/$GATE_RUN" --resume --compare "$GATE/record/points.jsonl"
}
stage_gate_inject_device() {  # +3% GPU kernel time per step: the device-time check must fail on every point
  timeout 400 $py -m vitcore.cli bench "${GATE_BENCH[@]}" --plugins "${INJECT_PLUGINS:-torch_ddp,torch_ddp_fp16,low_level_zero_s1,gemini,hybrid_parallel,torch_fsdp}" \
    --inject-device-pct 3 --out "$GATE/inject-device" --compare "$GATE/record/points.jsonl" --allow-missing
}
stage_gate_inject_host() {  # +10% host sleep per step: wall may regress, device time must pass
  timeout 400 $py -m vitcore.cli bench "${GATE_BENCH[@]}" --plugins "${INJECT_PLUGINS:-torch_ddp,torch_ddp_fp16,low_level_zero_s1,gemini,hybrid_parallel,torch_fsdp}" \
    --inject-host-pct 10 --out "$GATE/inject-host" --compare "$GATE/record/points.jsonl" --allow-missing
}
# The wall rule compares process medians and decides only with 5 processes a side (docs/gate.md): one
# host-bound point (HOST_POINT plugin at HOST_BS, default bs32) recorded in 5 processes, then +10% and +30% host sleep.
HOST_BENCH=(--plugins "${HOST_POINT:-low_level_zero_s1}" --batch-sizes "${HOST_BS:-32}" --no-reference --warmup 5 --steps 10 --repeats 5
            --min-window 0.3 --processes 5)
stage_gate_host_record() {
  timeout "${GATE_T:-280}" $py -m vitcore.cli bench "${HOST_BENCH[@]}" --out "$GATE/host-record" --resume
}
stage_gate_host_inject() {  # HOST_PCT (10, 30): the verdicts go to the log; the run exits 1 on a regression
  timeout "${GATE_T:-280}" $py -m vitcore.cli bench "${HOST_BENCH[@]}" --inject-host-pct "${HOST_PCT:-10}" \
    --out "$GATE/host-inject-${HOST_PCT:-10}" --compare "$GATE/host-record/points.jsonl"
}
stage_gate_host_inject30() { HOST_PCT=30 stage_gate_host_inject; }
stage_gemini_async() {  # gemini bf16 bs128's two steady memory states: fresh processes alternating colossalai's
  # enable_async_reduce default (1) and 0 (scripts/probe/sitecustomize.py), GEMINI_PAIRS pairs
  local i a
  for i in $(seq "${GEMINI_PAIRS:-2}"); do
    for a in 1 0; do
      GEMINI_ASYNC_REDUCE=$a PYTHONPATH="$PWD/scripts/probe:${PYTHONPATH:-}" timeout 150 $py -m vitcore.cli bench \
        --plugins gemini --batch-sizes 128 --no-reference --warmup 5 --steps 10 --repeats 5 --min-window 0.3 \
        --out "$GATE/gemini-async/reduce$a-$i"
      grep -h -m1 "\[probe\]" "$GATE/gemini-async/reduce$a-$i/bench.log" || echo "probe hook NOT applied"
      grep -ho '"steady_mem_allocated_gib": [0-9.]*' "$GATE/gemini-async/reduce$a-$i/points.jsonl"
    done
  done
}

stage_gemini_leftover() {  # gemini bf16 bs32 then bs128, GEMINI_PROCS fresh processes: memory still held at each
  # point's start and what holds it (scripts/probe/sitecustomize.py GEMINI_LEFTOVER); only the gemini entry
  local i
  for i in $(seq "${GEMINI_PROCS:-3}"); do
    GEMINI_LEFTOVER=1 PROBE_ONLY=gemini PYTHONPATH="$PWD/scripts/probe:${PYTHONPATH:-}" timeout 150 $py -m vitcore.cli bench \
      --plugins gemini --batch-sizes 32,128 --no-reference --warmup 5 --steps 10 --repeats 5 --min-window 0.3 \
      --out "$GATE/gemini-leftover/proc$i"
    grep -h "\[probe\]" "$GATE/gemini-leftover/proc$i/bench.log" | head -20 || echo "probe output NOT found"
    grep -ho '"batch_size": [0-9]*\|"steady_mem_allocated_gib": [0-9.]*\|"mem_held_at_start_gib": [0-9.e-]*' "$GATE/gemini-leftover/proc$i/points.jsonl"
  done
}

stage_tier_gemini() {  # issue 15/26: `pytest -m gpu --plugin=gemini` as a user types it (default workers), timed;
  # only the report's location added, the console kept beside it (issue 26: only the suite's lines and pytest's)
  mkdir -p "reports/gpu/$RUN"; local t0=$SECONDS
  timeout -s INT -k 30 "${TIER_T:-560}" $py -m pytest -m gpu --plugin=gemini \
    --results-out "reports/gpu/$RUN" --html "reports/gpu/$RUN/pytest-gpu-gemini.html" --self-contained-html \
    2>&1 | tee "reports/gpu/$RUN/console.log"
  echo "pytest -m gpu --plugin=gemini: exit ${PIPESTATUS[0]}, wall $((SECONDS - t0)) s" | tee "reports/gpu/$RUN/tier-gemini-wall.txt"
}
stage_tier() {  # issue 15: the whole `pytest -m gpu` with no extra flags, timed
  mkdir -p "reports/gpu/$RUN"; local t0=$SECONDS
  timeout -s INT -k 30 "${TIER_T:-560}" $py -m pytest -m gpu -p no:cacheprovider -q -rA --durations=30 \
    --results-out "reports/gpu/$RUN" --html "reports/gpu/$RUN/pytest-gpu.html" --self-contained-html
  echo "pytest -m gpu: exit $?, wall $((SECONDS - t0)) s" | tee "reports/gpu/$RUN/tier-wall.txt"
}

# --- issue 27, the portable gate (docs/gate.md), into reports/$DEV-gate/$RUN: PGATE selects the entries
# (default: all single-GPU ones). Each is the documented pytest command with its defaults.
gate_pytest() {  # NAME TIMEOUT [pytest args]: the performance tests; console log and pytest-html beside
  local name=$1 t=$2; shift 2
  mkdir -p "$GATE"; local t0=$SECONDS
  timeout -s INT -k 30 "$t" $py -m pytest -m gpu -k performance -p no:cacheprovider -rA \
    --results-out "$GATE/$name" --html "$GATE/$name/pytest.html" --self-contained-html ${PGATE:+--plugin=$PGATE} "$@" \
    2>&1 | tee "$GATE/$name.console.log"
  echo "$name: exit ${PIPESTATUS[0]}, wall $((SECONDS - t0)) s" | tee -a "$GATE/walls.txt"
}
stage_pg_new() { gate_pytest new-device "${GATE_T:-420}"; }  # (a) no budget of this GPU: invariants from its architecture's
stage_pg_record() { gate_pytest record "${GATE_T:-560}" --update-budgets; }  # (b) the documented record command
stage_pg_check() { gate_pytest "check${CHECK:-1}" "${GATE_T:-300}"; }  # (c) unchanged code, a fresh pytest process
stage_pg_check2() { CHECK=2 stage_pg_check; }
stage_pg_check3() { CHECK=3 stage_pg_check; }
stage_pg_inject() { gate_pytest inject-device-3pct "${GATE_T:-300}" --perf-inject-device-pct 3; }  # (d) must fail on every point
ab_run() {  # NAME [vitcore ab args]: one A/B run into $GATE/NAME, its console beside it, its wall time in walls.txt
  local name=$1; shift
  mkdir -p "$GATE"; local t0=$SECONDS
  timeout -s INT -k 30 "${GATE_T:-560}" $py -m vitcore ab --plugins "${AB_PLUGINS:-torch_ddp_fp16}" \
    --batch-sizes "${AB_BS:-128}" --processes "${AB_N:-5}" --out "$GATE/$name" "$@" 2>&1 | tee "$GATE/$name.console.log"
  echo "$name: exit ${PIPESTATUS[0]}, wall $((SECONDS - t0)) s" | tee -a "$GATE/walls.txt"
}
stage_pg_ab_host() {  # (d) a host sleep of AB_PCT% per step in the head side only: A/B decides it
  ab_run "ab-host-${AB_PCT:-10}pct" --base-tree "$PWD" --inject-host-pct "${AB_PCT:-10}"
}
stage_pg_ab_same() {  # unchanged code through the A/B mode: nothing regressed
  ab_run ab-same --base-tree "$PWD"
}
stage_pg_ab_change() {  # (e) a real change: AB_BASE_TREE (and AB_HEAD_TREE, default this tree) hold the two revisions' code
  ab_run "ab-change-$(basename "$AB_BASE_TREE")" --base-tree "$AB_BASE_TREE" ${AB_HEAD_TREE:+--head-tree "$AB_HEAD_TREE"}
}

export VITCORE_GIT_SHA=${VITCORE_GIT_SHA:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
DEV=${DEV:-h100}
RUN=${RUN:-$(date -u +%F)-$VITCORE_GIT_SHA}
GATE=${GATE:-reports/$DEV-gate/$RUN}
rc=0
for s in "$@"; do
  find "$HOME/.cache/colossalai" -name lock -type f -delete 2>/dev/null  # a killed stage's JIT lock
  echo "=== stage $s $(date -u +%H:%M:%S)"
  t0=$SECONDS
  "stage_$s" > >(tee "$out/$s.log") 2>&1 || rc=$?
  echo "=== stage $s done in $((SECONDS - t0)) s (rc so far $rc)"
  # after every stage, so a call killed at its limit still returns what finished
  # this run's folders only (reports/*/$RUN*, and GATE where the caller named an older one)
  mapfile -t made < <(for p in reports/*/"$RUN"* "$GATE"; do [ -e "$p" ] && echo "$p"; done | sort -u)
  tar -czf "$out/results.tgz.tmp" "${made[@]}" fixtures/budgets fixtures/transfer-thresholds.json 2>/dev/null && mv "$out/results.tgz.tmp" "$out/results.tgz"
done
exit $rc
