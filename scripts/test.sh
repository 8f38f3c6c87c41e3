#!/usr/bin/env bash
# The test suite as two pytest processes side by side (a 2-core machine keeps both busy).
#
#   scripts/test.sh [--fast] [PYTHON]     (default .venv/bin/python; exit 1 when either part fails)
#
# Whole suite: the tests that use the shared trained models (tests/tiny_models.py) in one process, the
# others in the second. Trained models are built once per run for both processes: tests/model_cache.py
# keeps them in $EDGEVISION_TEST_CACHE (default .test-cache/ in this checkout, content-addressed and
# verified, so a second run reuses what is still valid and rebuilds what is not).
# --fast: the edit-run tier, `-m "not trains and not installs and not slow"`: no model is trained, nothing
# installed, no test marked slow.
#
# The two processes are pinned to disjoint halves of the usable cores (taskset): EdgeVision sizes its
# thread pools (torch, onnxruntime, data loaders) by the process's CPU affinity, so neither part's busy-
# waiting threads share a core with the other's (two 2-thread trainings on 2 cores ran several times
# slower than one each).
#
# Each process writes its own log and temporary folder; both logs, each ending with its ten slowest
# tests, are printed when both end.
set -uo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [ "${1:-}" = "--fast" ]; then FAST=1; shift; fi
PY="${1:-.venv/bin/python}"
export EDGEVISION_TEST_CACHE="${EDGEVISION_TEST_CACHE:-$PWD/.test-cache}"
if [ "$FAST" = 1 ]; then
  FIRST=(tests/formats tests/runtime tests/serve tests/evaluate tests/reliability tests/data tests/inspect)
  MARK=(-m "not trains and not installs and not slow")
  export EDGEVISION_TEST_TIER=fast  # a trained-model fixture fails the test that reaches it (tests/tiny_models.py)
  what="fast tier: no training, no installs, nothing marked slow"
else
  # balanced by measured durations (each part about 9 to 11 minutes on one core; test_foreign moved over on
  # 2026-12-07 when the parts took 555 s | 648 s, test_quantize_torchvision at 619 s | 694 s: part 1 builds the
  # SSDlite it quantizes for its export tests anyway; the Ray cluster tests (~110 s) came in with the OPC UA and
  # PostgreSQL tests (~30 s) going back, at 697 s | 629 s); the tests that use `learned` stay together, so no part
  # waits on the other's build of it
  FIRST=(tests/bench tests/export tests/inspect/test_inspect.py tests/quantize/test_quantize.py
         tests/quantize/test_quantize_accuracy.py tests/quantize/test_quantize_errors.py
         tests/quantize/test_quantize_torchvision.py tests/serve/test_serve.py
         tests/train/test_learnability.py tests/runtime/test_foreign.py tests/scale/test_ray_cluster.py)
  MARK=()
  what="trained-model tests | the rest"
fi
IGNORE=()
for t in "${FIRST[@]}"; do IGNORE+=("--ignore=$t"); done
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
echo "tests: two pytest processes ($what), logs printed when both end"
OPTS=(-q -p no:cacheprovider --durations=10 "${MARK[@]+"${MARK[@]}"}")
PIN_A=() PIN_B=()
CORES="$(nproc 2>/dev/null || echo 1)"
if [ "$CORES" -ge 2 ] && command -v taskset > /dev/null; then
  mapfile -t ALLOWED < <("$PY" -c 'import os; print(*sorted(os.sched_getaffinity(0)), sep="\n")')
  half=$(( ${#ALLOWED[@]} / 2 ))
  PIN_A=(taskset -c "$(IFS=,; echo "${ALLOWED[*]:0:$half}")")
  PIN_B=(taskset -c "$(IFS=,; echo "${ALLOWED[*]:$half}")")
  echo "tests: part 1 on cores ${PIN_A[2]}, part 2 on cores ${PIN_B[2]}"
fi
start=$SECONDS
"${PIN_A[@]+"${PIN_A[@]}"}" "$PY" -m pytest "${OPTS[@]}" --basetemp="$LOGS/tmp-a" "${FIRST[@]}" > "$LOGS/a.log" 2>&1 &
a=$!
"${PIN_B[@]+"${PIN_B[@]}"}" "$PY" -m pytest "${OPTS[@]}" --basetemp="$LOGS/tmp-b" "${IGNORE[@]}" > "$LOGS/b.log" 2>&1 &
b=$!
# Both run in the background, where a non-interactive shell ignores SIGINT: Ctrl-C on this script stops them.
trap 'kill "$a" "$b" 2>/dev/null; wait; exit 130' INT TERM
wait "$a"; ra=$?
wait "$b"; rb=$?
# pytest exits 5 when a tier selects no test in one part: that part ran nothing, which is not a failure
[ "$FAST" = 1 ] && [ "$ra" = 5 ] && ra=0
[ "$FAST" = 1 ] && [ "$rb" = 5 ] && rb=0
echo "== part 1: ${FIRST[*]} (exit $ra)"; cat "$LOGS/a.log"
echo "== part 2: the other tests (exit $rb)"; cat "$LOGS/b.log"
echo "tests: both parts done in $((SECONDS - start)) s"
[ "$ra" = 0 ] && [ "$rb" = 0 ]
