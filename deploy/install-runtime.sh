#!/usr/bin/env bash
# Install the EdgeVision runtime service from a wheelhouse, with no network access.
#
#   deploy/install-runtime.sh PREFIX WHEELHOUSE
#
# Creates the virtual environment PREFIX (with $PYTHON, default python3) and installs
# `edgevision[serve,onnxruntime]` from WHEELHOUSE only (`pip --no-index --find-links`), pinned by
# WHEELHOUSE/constraints.txt; then checks that the service imports, that torch, Ultralytics and
# albumentations are absent, and prints the installed size. Used as is by deploy/Dockerfile and by
# the offline install in deploy/README.md (and replayed by tests/deploy).
#
# EDGEVISION_EXTRAS (default serve,onnxruntime) as for build-wheelhouse.sh; EDGEVISION_EXTRA_PACKAGES:
# more requirements installed from the same wheelhouse without the constraints (e.g. "onnxruntime-gpu"
# for NVIDIA's Jetson wheel copied into WHEELHOUSE).
#
# Exit status: 0 installed and checked, 2 bad arguments, 1 install or check failed.
set -euo pipefail
die() { echo "install-runtime.sh: $1" >&2; exit "${2:-1}"; }
[ $# -eq 2 ] || die "usage: deploy/install-runtime.sh PREFIX WHEELHOUSE" 2
PREFIX="$1"; WH="$2"
[ -d "$WH" ] || die "$WH: wheelhouse folder not found; build it with deploy/build-wheelhouse.sh on a connected machine" 2
ls "$WH"/edgevision-*.whl > /dev/null 2>&1 || die "$WH: no edgevision-*.whl in it; build it with deploy/build-wheelhouse.sh" 2
[ -f "$WH/constraints.txt" ] || die "$WH: no constraints.txt in it; build it with deploy/build-wheelhouse.sh" 2
if [ -f "$WH/SHA256SUMS" ]; then
  (cd "$WH" && sha256sum --quiet -c SHA256SUMS) || die "$WH: a wheel does not match SHA256SUMS (damaged copy?)"
fi
[ -e "$PREFIX" ] && die "$PREFIX already exists; remove it or choose another PREFIX (an upgrade installs into a new one)" 2
trap 'rc=$?; [ $rc -ne 0 ] && rm -rf "$PREFIX"; exit $rc' EXIT  # nothing half-installed is left behind
"${PYTHON:-python3}" -m venv "$PREFIX" || die "could not create the virtual environment $PREFIX"
if [ -x "$PREFIX/bin/python" ]; then PY="$PREFIX/bin/python"; else PY="$PREFIX/Scripts/python.exe"; fi
EXTRAS="${EDGEVISION_EXTRAS:-serve,onnxruntime}"
echo "install-runtime.sh: installing edgevision[$EXTRAS] from $WH into $PREFIX (no network)"
pipi() { PIP_NO_INDEX=1 "$PY" -m pip install --disable-pip-version-check --no-cache-dir -q --no-index --find-links "$WH" "$@"; }
pipi -c "$WH/constraints.txt" "edgevision[$EXTRAS]" || die "pip install from $WH failed"
if [ -n "${EDGEVISION_EXTRA_PACKAGES:-}" ]; then
  # shellcheck disable=SC2086  # a space-separated list on purpose
  pipi $EDGEVISION_EXTRA_PACKAGES || die "pip install of $EDGEVISION_EXTRA_PACKAGES from $WH failed"
fi
"$PY" -m pip check > /dev/null || die "pip check failed in $PREFIX"
"$PY" - <<'PY' || die "the installed runtime failed its checks (see above)"
import importlib.util, sys
import cv2, onnxruntime, fastapi, uvicorn
import edgevision.serve.app, edgevision.runtime.detector
heavy = [m for m in ("torch", "torchvision", "ultralytics", "albumentations", "onnx") if importlib.util.find_spec(m)]
if heavy:
    sys.exit(f"install-runtime.sh: the runtime install pulled {', '.join(heavy)}")
print(f"install-runtime.sh: onnxruntime {onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())}), "
      f"OpenCV {cv2.__version__}; no torch, Ultralytics, albumentations or onnx")
PY
echo "install-runtime.sh: installed into $PREFIX ($(du -sm "$PREFIX" | cut -f1) MB); start it with $PREFIX/bin/edgevision serve MODEL"
