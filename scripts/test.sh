#!/usr/bin/env bash
# The whole test suite as two pytest processes side by side (a 2-core machine keeps both busy; CI must
# stay under 30 minutes). The tests that share the session's trained models (tests/tiny_models.py:
# `learned`, the tiny YOLO / SSDlite runs) run in one process, so each model is trained once; the others
# in the second. Each writes its own log and temporary folder; both logs are printed at the end.
#
#   scripts/test.sh [PYTHON]          (default .venv/bin/python; exit 1 when either part fails)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
TRAINED=(tests/bench tests/export tests/inspect/test_inspect.py tests/quantize tests/serve/test_serve.py
         tests/train/test_learnability.py)
IGNORE=()
for t in "${TRAINED[@]}"; do IGNORE+=("--ignore=$t"); done
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
echo "tests: two pytest processes (trained-model tests | the rest), logs printed when both end"
"$PY" -m pytest -q -p no:cacheprovider --basetemp="$LOGS/tmp-trained" --durations=15 "${TRAINED[@]}" \
  > "$LOGS/trained.log" 2>&1 &
a=$!
"$PY" -m pytest -q -p no:cacheprovider --basetemp="$LOGS/tmp-rest" --durations=15 "${IGNORE[@]}" \
  > "$LOGS/rest.log" 2>&1 &
b=$!
# Both run in the background, where a non-interactive shell ignores SIGINT: Ctrl-C on this script stops them.
trap 'kill "$a" "$b" 2>/dev/null; wait; exit 130' INT TERM
wait "$a"; ra=$?
wait "$b"; rb=$?
echo "== tests using the trained models (exit $ra)"; cat "$LOGS/trained.log"
echo "== the other tests (exit $rb)"; cat "$LOGS/rest.log"
[ "$ra" = 0 ] && [ "$rb" = 0 ]
