#!/usr/bin/env bash
# Issue 24's check on a GPU machine, in one call: install onnxruntime-gpu (and TensorRT's libraries) from the
# wheels carried in .whl/ when the image lacks them, put EdgeVision on PYTHONPATH, block the network, and run
# benchmarks/gpu_deploy_check.py on the artefacts `gpu_deploy_check.py prepare DIR` built beforehand.
#   bash benchmarks/gpu_deploy_check.sh ARTEFACTS_DIR OUT_DIR [--providers tensorrt,cuda] [--budget-s 420]
# Everything it measures lands in OUT_DIR (results.json, results.md, bench/, reliability/), written step by
# step, so a run cut short still returns its numbers.
set -uo pipefail
ART="${1:?usage: gpu_deploy_check.sh ARTEFACTS_DIR OUT_DIR [options]}"
OUT="${2:?usage: gpu_deploy_check.sh ARTEFACTS_DIR OUT_DIR [options]}"
shift 2
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "could not install the carried wheels"; exit 2; }
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
BLOCK="$(mktemp -d)"
$PY - "$BLOCK" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.helpers import _BLOCKER
Path(sys.argv[1], "sitecustomize.py").write_text(_BLOCKER)
PY
export EDGEVISION_TEST_NETLOG="$OUT/netlog.txt" PYTHONUNBUFFERED=1 EDGEVISION_HOME="$(mktemp -d)/home"
: > "$EDGEVISION_TEST_NETLOG"
export PYTHONPATH="$BLOCK:$PWD:${PYTHONPATH:-}"
$PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" | tee "$OUT/ort.txt"
$PY benchmarks/gpu_deploy_check.py run "$ART" "$OUT" "$@"
rc=$?
echo "network attempts: $(wc -l < "$EDGEVISION_TEST_NETLOG")"
exit $rc
