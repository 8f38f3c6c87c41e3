#!/usr/bin/env bash
# Build an offline wheelhouse for the EdgeVision runtime service, on a machine that reaches PyPI.
#
#   deploy/build-wheelhouse.sh OUT [--platform TAG --python-version X.Y]
#
# OUT receives the EdgeVision wheel and every wheel that `edgevision[serve,onnxruntime]` needs, at
# the versions pinned in constraints.txt (no torch, no Ultralytics), plus SHA256SUMS and
# constraints.txt. Copy OUT to the box (USB stick, internal share) and install it there with no
# network:   deploy/install-runtime.sh /opt/edgevision OUT   (or: pip install --no-index
# --find-links OUT -c OUT/constraints.txt "edgevision[serve,onnxruntime]").
#
# For a box of another kind, name its platform and Python, e.g. a Raspberry Pi / Jetson / Rockchip
# board with 64-bit Linux (glibc >= 2.28) and Python 3.11:  --platform linux-aarch64 --python-version 3.11
# (short for every manylinux tag such a box accepts); a Windows industrial PC:  --platform win_amd64
# --python-version 3.11. Any pip platform tag works too (repeat --platform). Only binary wheels are
# taken then (nothing is compiled for the other machine). Set PIP_INDEX_URL for a company mirror.
#
# EDGEVISION_EXTRAS (default serve,onnxruntime) picks the extras: e.g. "serve,onnxruntime-openvino" for
# Intel iGPU / NPU boxes, or "serve" alone when the onnxruntime wheel comes from elsewhere (NVIDIA's
# Jetson builds: copy that wheel into OUT; see deploy/README.md).
#
# Exit status: 0 done, 2 bad arguments, 1 a download or build failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "build-wheelhouse.sh: $1" >&2; exit "${2:-1}"; }
[ $# -ge 1 ] || die "usage: deploy/build-wheelhouse.sh OUT [--platform TAG --python-version X.Y]" 2
OUT="$1"; shift
CROSS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --platform)
      [ $# -ge 2 ] || die "--platform needs a value (e.g. linux-aarch64, win_amd64)" 2
      case "$2" in
        linux-aarch64|linux-x86_64)  # every manylinux tag a glibc >= 2.28 box accepts (pip does not expand them)
          arch="${2#linux-}"; CROSS+=(--platform "manylinux2014_$arch")
          for minor in $(seq 17 28); do CROSS+=(--platform "manylinux_2_${minor}_$arch"); done ;;
        *) CROSS+=(--platform "$2") ;;
      esac
      shift 2 ;;
    --python-version) [ $# -ge 2 ] || die "--python-version needs a value (e.g. 3.11)" 2; CROSS+=(--python-version "$2"); shift 2 ;;
    *) die "unknown argument '$1'; expected --platform TAG or --python-version X.Y" 2 ;;
  esac
done
[ ${#CROSS[@]} -gt 0 ] && CROSS+=(--only-binary=:all:)
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

echo "build-wheelhouse.sh: building the EdgeVision wheel"
"$PY" -m pip wheel --disable-pip-version-check -q --no-deps -w "$OUT" "$ROOT" || die "building the EdgeVision wheel failed"
WHEEL="$(ls -t "$OUT"/edgevision-*.whl | head -n1)"
echo "build-wheelhouse.sh: downloading the runtime's dependencies (pinned by constraints.txt)${CROSS:+ for ${CROSS[*]}}"
"$PY" -m pip download --disable-pip-version-check -q -c "$ROOT/constraints.txt" -d "$OUT" \
  "${CROSS[@]+"${CROSS[@]}"}" "$WHEEL[${EDGEVISION_EXTRAS:-serve,onnxruntime}]" || die "downloading the dependencies failed (is PyPI reachable?)"
cp "$ROOT/constraints.txt" "$OUT/constraints.txt"
for heavy in torch ultralytics albumentations; do
  if ls "$OUT" | grep -qi "^${heavy}-"; then die "the wheelhouse pulled $heavy; the runtime must not need it"; fi
done
(cd "$OUT" && sha256sum ./*.whl ./*.tar.gz 2>/dev/null | sed 's#  \./#  #' > SHA256SUMS) || true
n="$(ls "$OUT"/*.whl | wc -l)"
echo "build-wheelhouse.sh: $n wheels, $(du -sm "$OUT" | cut -f1) MB in $OUT"
