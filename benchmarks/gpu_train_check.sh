#!/usr/bin/env bash
# One short training run per backend on a CUDA GPU, offline, with sockets blocked: the check that
# issue 4 asks for whenever a GPU is available. Run from the repository root on the GPU machine:
#   bash benchmarks/gpu_train_check.sh OUT_DIR
# It expects EdgeVision's dependencies importable (PYTHONPATH) and writes logs + run files to OUT_DIR.
set -uo pipefail
OUT="${1:?usage: gpu_train_check.sh OUT_DIR}"
mkdir -p "$OUT"
export EDGEVISION_HOME="$(mktemp -d)/home" PYTHONUNBUFFERED=1
BLOCK="$(mktemp -d)"
cat > "$BLOCK/sitecustomize.py" <<'PY'
import os, socket
_log = os.environ["EDGEVISION_TEST_NETLOG"]
def _refuse(*args, **kwargs):
    with open(_log, "a") as f:
        f.write(repr(args[:3]) + "\n")
    raise OSError("network blocked by the EdgeVision GPU check")
_connect = socket.socket.connect
def _connect_local(self, *args):
    if self.family == socket.AF_UNIX:
        return _connect(self, *args)
    return _refuse(self, *args)
socket.socket.connect = _connect_local
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
PY
export EDGEVISION_TEST_NETLOG="$OUT/netlog.txt"
: > "$EDGEVISION_TEST_NETLOG"
export PYTHONPATH="$BLOCK:${PYTHONPATH:-}"
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, torchvision, ultralytics; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ultralytics', ultralytics.__version__, 'cuda', torch.cuda.is_available())"
  ls "$EDGEVISION_HOME/ultralytics/Ultralytics" 2>/dev/null
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
: > "$EDGEVISION_TEST_NETLOG"  # the version line above imports Ultralytics bare; EdgeVision's runs start here
DATA="$(mktemp -d)/sample"
RUNS="$(mktemp -d)"
$PY -m edgevision synth "$DATA" --n 300 --imgsz 320 > /dev/null
t0=$(date +%s)
$PY -m edgevision -v train --data "$DATA" --model yolov8n --out "$RUNS/yolo" --epochs ${YOLO_EPOCHS:-10} --imgsz 320 --batch 32 \
    --device 0 > "$OUT/yolo.log" 2>&1; echo "yolo exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
grep -E "AMP|error|Error" "$OUT/yolo.log" | head -5
t0=$(date +%s)
$PY -m edgevision -v train --data "$DATA" --backend torchvision --model ssdlite320_mobilenet_v3_large --out "$RUNS/tv" \
    --epochs ${TV_EPOCHS:-5} --imgsz 320 --batch 32 --device 0 > "$OUT/tv.log" 2>&1; echo "torchvision exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
echo "network attempts: $(wc -l < "$EDGEVISION_TEST_NETLOG")" | tee -a "$OUT/env.txt"
ls "$EDGEVISION_HOME/ultralytics/Ultralytics" >> "$OUT/env.txt" 2>&1
tail -n 3 "$OUT/yolo.log" "$OUT/tv.log"
for r in yolo tv; do
  cp "$RUNS/$r/metrics.json" "$OUT/${r}_metrics.json" 2>/dev/null
  cp "$RUNS/$r/history.csv" "$OUT/${r}_history.csv" 2>/dev/null
done
