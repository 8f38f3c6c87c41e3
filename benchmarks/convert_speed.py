"""COCO json -> YOLO labels: EdgeVision against Ultralytics' ``convert_coco``, side by side.

Builds a synthetic, deterministic COCO detection file (default 20,000 images, 200,000 boxes, sizes
in the json, no image files), converts it with both tools in the same run, each conversion in its
own fresh subprocess (``--repeat`` times, interleaved; the median is reported), measures each
child's peak RSS (its own ``VmHWM``, and ``ru_maxrss`` from ``os.wait4``, which also covers what
the child spawned) and then checks that both wrote the same boxes (within
1e-4, normalized) for every image both wrote. Exit status 1 when they disagree.

    python benchmarks/convert_speed.py                       # Ultralytics from this interpreter
    python benchmarks/convert_speed.py --python /path/to/venv/bin/python --repeat 5
    python benchmarks/convert_speed.py --images 2000 --boxes 20000 --repeat 1   # quick

Class ids: Ultralytics (``cls91to80=False``) writes ``category_id - 1``; EdgeVision writes the
index of the category in sorted-id order. The synthetic categories are ``1..K`` so both agree.
Ultralytics writes no file for an image without boxes (EdgeVision writes an empty one), so the
comparison covers the files both wrote and checks that the extra EdgeVision files are empty.

Only the standard library is imported at module level: the ``--child`` mode runs under the
Ultralytics interpreter, which need not have EdgeVision installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOL = 1e-4
SPLIT = "train"  # the json is instances_train.json: both tools write labels/train/<stem>.txt
SIZES_WH = [(640, 480), (1280, 720), (1920, 1080), (2448, 2048), (4096, 3000), (800, 800)]


# -- the synthetic dataset -----------------------------------------------------------------------
def make_coco(path: Path, n_images: int, n_boxes: int, n_classes: int, seed: int = 0) -> dict[str, int]:
    """Write a deterministic COCO detection json; returns what it holds.

    About 5% of the images are backgrounds (no boxes); boxes lie inside their image, are at least
    2 px wide and high, and have 2-decimal coordinates. Category ids are ``1..n_classes``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = np.array(SIZES_WH)[rng.integers(0, len(SIZES_WH), n_images)]
    annotated = np.flatnonzero(rng.random(n_images) >= 0.05)
    owner = np.sort(annotated[rng.integers(0, len(annotated), n_boxes)])
    wh_img = sizes[owner].astype(np.float64)
    bw = np.round(np.maximum(2.0, wh_img[:, 0] * rng.uniform(0.01, 0.3, n_boxes)), 2)
    bh = np.round(np.maximum(2.0, wh_img[:, 1] * rng.uniform(0.01, 0.3, n_boxes)), 2)
    x = np.round(rng.uniform(0, 1, n_boxes) * (wh_img[:, 0] - bw), 2)
    y = np.round(rng.uniform(0, 1, n_boxes) * (wh_img[:, 1] - bh), 2)
    cat = rng.integers(1, n_classes + 1, n_boxes)
    images = [{"id": i + 1, "file_name": f"line_{i:06d}.jpg", "width": int(w), "height": int(h)}
              for i, (w, h) in enumerate(sizes.tolist())]
    anns = [{"id": k + 1, "image_id": o + 1, "category_id": c, "bbox": [x0, y0, w0, h0], "area": round(w0 * h0, 2),
             "iscrowd": 0, "segmentation": []}
            for k, (o, c, x0, y0, w0, h0) in enumerate(zip(owner.tolist(), cat.tolist(), x.tolist(), y.tolist(),
                                                          bw.tolist(), bh.tolist(), strict=True))]
    cats = [{"id": c, "name": f"defect_{c}", "supercategory": "defect"} for c in range(1, n_classes + 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"info": {"description": "EdgeVision convert_speed benchmark"}, "images": images,
                   "annotations": anns, "categories": cats}, f, separators=(",", ":"))
    return {"images": n_images, "boxes": n_boxes, "backgrounds": n_images - len(np.unique(owner)),
            "json_mb": round(path.stat().st_size / 2**20, 1)}


# -- one conversion, in a child process ----------------------------------------------------------
def _child(tool: str, ann_dir: Path, out: Path, result: Path) -> None:
    """Import the tool, convert ``ann_dir``'s json into ``out``, write timings to ``result``."""
    t0 = time.perf_counter()
    if tool == "edgevision":
        from edgevision.convert import read_dataset, write_dataset
        from edgevision.formats import list_formats

        list_formats()  # load the format registry here, as importing convert_coco loads Ultralytics

        def run() -> None:
            ds = read_dataset(ann_dir / f"instances_{SPLIT}.json", "coco").dataset
            write_dataset(ds, out, "yolo", images="none")
    else:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics.data.converter import convert_coco

        def run() -> None:
            convert_coco(str(ann_dir), str(out), use_segments=False, cls91to80=False)
    t1 = time.perf_counter()
    hwm_imports = _vm_hwm_mb()
    run()
    t2 = time.perf_counter()
    result.write_text(json.dumps({"import_s": t1 - t0, "convert_s": t2 - t1, "rss_after_import_mb": hwm_imports,
                                  "vm_hwm_mb": _vm_hwm_mb()}))


def _vm_hwm_mb() -> float | None:
    """This process's peak RSS since its exec (Linux ``VmHWM``), in MB; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def run_child(python: str, tool: str, ann_dir: Path, out: Path, log: Path) -> dict[str, Any]:
    """Run one conversion in a fresh interpreter; add its wall time and peak RSS.

    ``peak_rss_mb`` is the child's ``ru_maxrss`` from ``os.wait4``. Linux carries the peak of the
    forking process over ``exec``, so this parent stays small (stdlib only, the dataset is made in
    a child too); the child's own ``VmHWM`` (``vm_hwm_mb``) is recorded as a cross-check.
    """
    result = out.with_suffix(".json")
    cmd = [python, str(Path(__file__).resolve()), "--child", tool, str(ann_dir), str(out), str(result)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[1]),
                                                                   os.environ.get("PYTHONPATH", "")] if p)}
    t0 = time.perf_counter()
    with open(log, "ab") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{tool} child failed (exit {proc.returncode}); last output:\n{tail}")
    data = json.loads(result.read_text())
    result.unlink()
    data.update(process_s=wall, peak_rss_mb=usage.ru_maxrss / 1024)
    return data


def has_ultralytics(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('ultralytics') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


# -- comparing the label trees -------------------------------------------------------------------
def read_labels(root: Path) -> dict[str, bytes]:
    """Every ``*.txt`` under ``root/labels``, by path relative to ``root/labels``."""
    base = root / "labels"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*.txt")}


def _rows(texts: list[bytes]) -> tuple[Any, Any]:
    """All rows of ``texts`` as one ``(N, 5)`` array and the file index of each row."""
    import numpy as np

    counts = np.array([t.count(b"\n") for t in texts], dtype=np.int64)
    values = np.array(b"".join(texts).split(), dtype=np.float64)
    if values.size != counts.sum() * 5:
        raise ValueError(f"expected 5 numbers per line, got {values.size} numbers on {counts.sum()} lines")
    return values.reshape(-1, 5), np.repeat(np.arange(len(texts)), counts)


def compare(ev_root: Path, ul_root: Path) -> list[str]:
    """Problems found comparing the two label trees (empty when they agree)."""
    import numpy as np

    ev, ul = read_labels(ev_root), read_labels(ul_root)
    problems = []
    only_ul = sorted(set(ul) - set(ev))
    if only_ul:
        problems.append(f"{len(only_ul)} label files written by Ultralytics only, e.g. {only_ul[0]}")
    nonempty_only_ev = sorted(k for k in set(ev) - set(ul) if ev[k].strip())
    if nonempty_only_ev:
        problems.append(f"{len(nonempty_only_ev)} non-empty label files written by EdgeVision only, e.g. {nonempty_only_ev[0]}")
    both = sorted(set(ev) & set(ul))
    (a, fa), (b, fb) = _rows([ev[k] for k in both]), _rows([ul[k] for k in both])
    per_a, per_b = np.bincount(fa, minlength=len(both)), np.bincount(fb, minlength=len(both))
    if (per_a != per_b).any():
        k = int(np.flatnonzero(per_a != per_b)[0])
        problems.append(f"{int((per_a != per_b).sum())} files differ in box count, e.g. {both[k]}: "
                        f"EdgeVision {per_a[k]}, Ultralytics {per_b[k]}")
        return problems
    oa = np.lexsort((*a[:, ::-1].T, fa))  # by file, then class, cx, cy, w, h
    ob = np.lexsort((*b[:, ::-1].T, fb))
    diff = np.abs(a[oa] - b[ob]).max(axis=1)
    if (diff > TOL).any():
        k = int(np.argmax(diff))
        problems.append(f"{int((diff > TOL).sum())} boxes differ by more than {TOL}, e.g. in {both[int(fa[oa][k])]}: "
                        f"EdgeVision {a[oa][k].tolist()} vs Ultralytics {b[ob][k].tolist()}")
    return problems


# -- the run ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--boxes", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3, help="conversions per tool (median reported)")
    ap.add_argument("--python", help="interpreter with ultralytics (default: this one, if it has it)")
    ap.add_argument("--ev-python", default=sys.executable, help="interpreter with edgevision (default: this one)")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make:
        path, images, boxes, classes = args.make
        print(json.dumps(make_coco(Path(path), int(images), int(boxes), int(classes))))
        return 0
    if args.child:
        tool, ann, out, result = args.child
        _child(tool, Path(ann), Path(out), Path(result))
        return 0

    ul_python = args.python or sys.executable
    skip_ul = not has_ultralytics(ul_python)
    if skip_ul:
        print(f"Ultralytics is not importable by {ul_python}: running EdgeVision alone. Pass --python with an "
              "interpreter that has it (e.g. a venv made by scripts/install.sh VENV train).")
    work = args.work or Path(tempfile.mkdtemp(prefix="ev-convert-speed-"))
    try:
        return _run(args, work, ul_python, skip_ul)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, ul_python: str, skip_ul: bool) -> int:
    ann_dir = work / "coco" / "annotations"
    t0 = time.perf_counter()
    made = subprocess.run([args.ev_python, str(Path(__file__).resolve()), "--make", str(ann_dir / f"instances_{SPLIT}.json"),
                           str(args.images), str(args.boxes), str(args.classes)], capture_output=True, text=True)
    if made.returncode != 0:
        raise SystemExit(f"making the dataset failed:\n{made.stderr[-2000:]}")
    info = json.loads(made.stdout)
    print(f"dataset: {info['images']} images ({info['backgrounds']} backgrounds), {info['boxes']} boxes, "
          f"{args.classes} classes, json {info['json_mb']} MB (made in {time.perf_counter() - t0:.1f} s)")
    tools = {"edgevision": args.ev_python} if skip_ul else {"edgevision": args.ev_python, "ultralytics": ul_python}
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    log = work / "children.log"
    shutil.rmtree(work / "runs", ignore_errors=True)
    for i in range(args.repeat):
        for tool, python in tools.items():
            # each run writes a fresh folder (deleting 20,000 files just before a run slows the run's
            # own file creation), and dirty pages are flushed first so no run pays for the last one
            os.sync()
            runs[tool].append(run_child(python, tool, ann_dir, work / "runs" / f"{tool}-{i}", log))
            last = runs[tool][-1]
            print(f"  run {i + 1}/{args.repeat} {tool:<11} convert {last['convert_s']:6.2f} s  "
                  f"peak RSS {last.get('vm_hwm_mb') or last['peak_rss_mb']:7.0f} MB", flush=True)
    summary = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0] if rs[0][k] is not None} for t, rs in runs.items()}
    for t, rs in runs.items():
        summary[t]["best_convert_s"] = min(r["convert_s"] for r in rs)
    last_ev, last_ul = work / "runs" / f"edgevision-{args.repeat - 1}", work / "runs" / f"ultralytics-{args.repeat - 1}"
    problems = [] if skip_ul else compare(last_ev, last_ul)
    print_table(summary)
    if args.json:
        args.json.write_text(json.dumps({"dataset": info, "repeat": args.repeat, "median": summary,
                                         "runs": runs, "agree": not problems, "problems": problems}, indent=2))
    if skip_ul:
        return 0
    n_files = len(read_labels(last_ul))
    if problems:
        print("MISMATCH between the two outputs:\n  " + "\n  ".join(problems))
        return 1
    print(f"outputs agree: same boxes (within {TOL}) in the {n_files} label files both wrote; "
          f"EdgeVision's other {info['backgrounds']} files are the empty labels of background images")
    return 0


def print_table(summary: dict[str, dict[str, float]]) -> None:
    """Medians per tool. Peak RSS is the child's own VmHWM where known (Linux), else ru_maxrss."""
    head = (f"{'tool':<12}{'convert s':>10}{'best s':>8}{'process s':>10}{'import s':>9}{'peak RSS MB':>12}"
            f"{'after import':>13}{'ru_maxrss MB':>13}")
    print(head + "\n" + "-" * len(head))
    for tool, s in summary.items():
        after = f"{s['rss_after_import_mb']:.0f}" if "rss_after_import_mb" in s else "-"
        print(f"{tool:<12}{s['convert_s']:>10.2f}{s['best_convert_s']:>8.2f}{s['process_s']:>10.2f}{s['import_s']:>9.2f}"
              f"{_peak(s):>12.0f}{after:>13}{s['peak_rss_mb']:>13.0f}")
    if len(summary) == 2:
        ev, ul = summary["edgevision"], summary["ultralytics"]
        print(f"EdgeVision vs Ultralytics: {ul['convert_s'] / ev['convert_s']:.1f}x faster conversion (median; "
              f"best {ul['best_convert_s'] / ev['best_convert_s']:.1f}x), "
              f"{ul['process_s'] / ev['process_s']:.1f}x faster process, {_peak(ul) / _peak(ev):.1f}x less peak memory")


def _peak(s: dict[str, float]) -> float:
    return s.get("vm_hwm_mb") or s["peak_rss_mb"]


if __name__ == "__main__":
    sys.exit(main())
