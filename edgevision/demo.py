"""``edgevision demo``: the whole pipeline on the built-in sample, end to end.

Data stages (in this process, base install): generate the synthetic sample -> validate it ->
statistics -> a seeded stratified split -> convert YOLO -> COCO -> VOC -> YOLO through the canonical
model, checking that every stage keeps every image, object and class with boxes within `BOX_TOL_PX`.

Model stages (`run_model_stages`, each through the ``edgevision`` command in its own process, exactly
as a user types it, so nothing timed shares a process with torch): train a nano YOLO from scratch
(`TRAIN_RECIPE`; CI's learnability test trains a faster recipe of the same model on the same sample) -> eval on the
test split -> export ONNX -> quantize INT8 (judged on val) -> bench FP32 and INT8 -> reliability gate
(INT8 against FP32). Everything lands in one folder, ``work``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.dataset import Dataset

BOX_TOL_PX = 1e-3
"""Largest box disagreement allowed between the sample and any converted copy (pixels)."""

SAMPLE_IMGSZ = 256
TRAIN_RECIPE: dict[str, Any] = {
    "imgsz": 256, "epochs": 22, "batch": 4, "patience": 0, "augment": "industrial-light", "seed": 0,
    "ultralytics": {"nbs": 4},
}
"""The demo's training config (yolov8n from scratch on 200 sample images, 160 for training). What gets a
from-scratch model off the ground on a small dataset is the number of optimizer steps, not epochs: with
batch 4 and ``nbs: 4`` (every batch an optimizer step; Ultralytics would accumulate to 64) an epoch is 40
steps, val mAP50 takes off at epoch 4 and reaches 0.64 (mAP50-95 0.39) at epoch 22, about 10 s per epoch on
2 cores; the previous recipe (batch 16, ``nbs: 16``, 10 steps per epoch) took off at epoch 13 and reached
0.55 / 0.31 in the same 22 epochs (benchmarks/README.md, "The demo's recipe")."""
QUICK_RECIPE: dict[str, Any] = {**TRAIN_RECIPE, "imgsz": 128, "epochs": 1, "batch": 8}
"""``--quick``: every stage runs, in about two minutes; the model learns nothing."""

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: the CLI turns it into progress bars."""


@dataclass
class Stage:
    name: str
    format: str
    images: int
    objects: int
    classes: int
    max_box_error: float


@dataclass
class DemoResult:
    """What the demo did and found.

    Attributes:
        work: the output folder.
        stages: the round-trip stages (one row each).
        validation: findings per severity on the sample (``{"error": 0, ...}``).
        stats: the sample's statistics (`edgevision.data.stats.DatasetStats`).
        split: images per split after the stratified split.
        unreachable: ``(class, split)`` pairs the split could not fill.
        problem: the first check that failed, or None.
    """

    work: Path
    stages: list[Stage] = field(default_factory=list)
    model_stages: list[dict[str, Any]] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, int] = field(default_factory=dict)
    stats: Any = None
    split: dict[str, int] = field(default_factory=dict)
    unreachable: list[tuple[str, str]] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, message: str) -> None:
        if self.problem is None:
            self.problem = message


def max_box_error(a: Dataset, b: Dataset) -> float:
    """Largest coordinate difference between matching objects of two datasets (by image base name).

    Objects are matched after sorting by (class name, box); a differing image set, object count or
    class gives ``inf``.
    """
    def index(ds: Dataset) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
        return {
            Path(r.name).name: sorted((ds.labels.names[c], tuple(box)) for c, box in zip(r.class_ids, r.boxes.tolist()))
            for r in ds.images
        }

    ia, ib = index(a), index(b)
    if ia.keys() != ib.keys():
        return float("inf")
    worst = 0.0
    for key, objs in ia.items():
        other = ib[key]
        if len(objs) != len(other) or any(x[0] != y[0] for x, y in zip(objs, other)):
            return float("inf")
        if objs:
            diff = np.abs(np.array([o[1] for o in objs]) - np.array([o[1] for o in other]))
            worst = max(worst, float(diff.max()))
    return worst


def run_demo(
    work: Path,
    n: int = 120,
    seed: int = 0,
    log: Callable[[str], None] = lambda m: None,
    progress: Progress | None = None,
    imgsz: int = SAMPLE_IMGSZ,
) -> DemoResult:
    """Run the demo pipeline into ``work`` (its stage folders are replaced).

    Args:
        work: output folder.
        n: number of sample images.
        seed: sample and split seed.
        log: receives one line per stage (the CLI prints them).
        progress: receives ``(stage, done, total)`` during the long stages.
    """
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.data.split import split_dataset
    from edgevision.data.stats import dataset_stats
    from edgevision.data.synth import write_synth
    from edgevision.data.validate import validate

    def bar(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    result = DemoResult(work)

    log(f"1/11 synth: {n} sample images (seed {seed}) -> {work / 'sample-yolo'}")
    write_synth(work / "sample-yolo", n=n, seed=seed, imgsz=imgsz, to="yolo", overwrite=True, progress=bar("synth"))
    sample = read_dataset(work / "sample-yolo").dataset

    log("2/11 validate: boxes, images, duplicates and train/val leakage")
    checked = validate(sample, progress=bar("validate"))
    result.validation = {sev: sum(f.severity == sev for f in checked.findings) for sev in ("error", "warning", "info")}
    if not checked.ok:
        result.fail(f"validate: {len(checked.errors)} error(s) in the sample, e.g. {checked.errors[0]}")

    log("3/11 stats: classes, box sizes, background images")
    result.stats = dataset_stats(sample)

    log(f"4/11 split: stratified 80/10/10 (seed {seed}) -> {work / 'split-yolo'}")
    split = split_dataset(sample, ratios=(0.8, 0.1, 0.1), seed=seed)
    write_dataset(split.dataset, work / "split-yolo", "yolo", overwrite=True)
    result.split = dict(split.report.images)
    result.unreachable = [(u.class_name, u.split) for u in split.report.unreachable]

    src = work / "split-yolo"
    for step, to in enumerate(("coco", "voc", "yolo"), start=1):
        dst = work / f"{step}-{to}"
        log(f"5/11 convert: {src.name} -> {dst.name} ({to})")
        write_dataset(read_dataset(src).dataset, dst, to, images="symlink" if to != "yolo" else "copy", overwrite=True)
        src = dst
    reference = split.dataset
    for path in [work / "split-yolo", *(work / f"{i}-{f}" for i, f in enumerate(("coco", "voc", "yolo"), start=1))]:
        rr = read_dataset(path)
        ds = rr.dataset
        err = max_box_error(reference, ds)
        result.stages.append(Stage(path.name, rr.format, len(ds), ds.num_objects, len(ds.labels), err))
        if err > BOX_TOL_PX:
            result.fail(f"{path}: boxes differ from the sample by {err:.3g} px (tolerance {BOX_TOL_PX} px)")
        if sorted(ds.labels.names) != sorted(reference.labels.names):
            result.fail(f"{path}: classes {ds.labels.names} differ from the sample's {reference.labels.names}")
        got = {s: len(ds.split(s)) for s in ds.splits}
        if got != {s: c for s, c in result.split.items() if c}:
            result.fail(f"{path}: splits {got} differ from the split made ({result.split})")
    return result


MODEL_STAGES = ("train", "eval", "export", "quantize", "bench", "reliability")


def model_stages_missing() -> list[str]:
    """Packages the model stages need that are not installed (empty: the demo can run them)."""
    import importlib.util

    need = {"torch": "train", "ultralytics": "train", "onnx": "train", "onnxruntime": "onnxruntime",
            "albumentations": "train"}
    return sorted({f"{m} ({extra} extra)" for m, extra in need.items() if importlib.util.find_spec(m) is None})


def _cli(args: list[str], log_file: Path, timeout: float) -> tuple[int, str]:
    """``python -m edgevision ARGS`` in a fresh process; its output appended to ``log_file``."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, COLUMNS="160", NO_COLOR="1", TERM="dumb", PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-m", "edgevision", *args], capture_output=True, text=True, timeout=timeout,
                       env=env)
    with log_file.open("a", encoding="utf-8") as f:
        f.write(f"$ edgevision {' '.join(args)}\n{r.stdout}{r.stderr}\n")
    lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
    return r.returncode, lines[-1] if lines else ""


def run_model_stages(result: DemoResult, *, quick: bool = False, seed: int = 0,
                     log: Callable[[str], None] = lambda m: None, recipe: dict[str, Any] | None = None) -> DemoResult:
    """Train -> eval -> export -> quantize -> bench -> reliability on ``work/split-yolo`` (see the module doc).

    Each stage is the ``edgevision`` command a user would type (all of them are written to
    ``work/commands.log`` with their output). A stage that fails stops the demo with its last error line,
    except quantization, whose accuracy gate may refuse the INT8 model: the demo then goes on with FP32.
    ``recipe`` replaces the training config (`TRAIN_RECIPE`, or `QUICK_RECIPE` with ``quick``).
    """
    import json
    import time

    import yaml

    work = result.work
    data = work / "split-yolo"
    cmd_log = work / "commands.log"
    cmd_log.write_text("", encoding="utf-8")
    recipe = recipe if recipe is not None else QUICK_RECIPE if quick else TRAIN_RECIPE
    cfg = work / "demo-train.yaml"
    cfg.write_text(yaml.safe_dump({**recipe, "seed": seed}, sort_keys=False), encoding="utf-8")
    run, fp32, int8 = work / "run", work / "model.onnx", work / "model.int8.onnx"
    bench_dir, rel_dir = work / "bench", work / "reliability"
    for old in (run, fp32, int8, bench_dir, rel_dir, int8.with_suffix(".report.json"), int8.with_suffix(".report.md")):
        if old.is_dir():
            import shutil

            shutil.rmtree(old)
        elif old.exists():
            old.unlink()

    def stage(i: int, name: str, args: list[str], what: str, timeout: float = 1800, ok_codes: tuple[int, ...] = (0,)) -> int:
        log(f"{i}/11 {name}: {what}")
        t0 = time.perf_counter()
        rc, last = _cli(args, cmd_log, timeout)
        result.model_stages.append({"stage": name, "command": "edgevision " + " ".join(args), "exit": rc,
                                    "seconds": round(time.perf_counter() - t0, 1)})
        if rc not in ok_codes:
            result.fail(f"{name} failed (exit {rc}): {last}; the full output is in {cmd_log}")
        return rc

    if stage(6, "train", ["train", "--data", str(data), "--model", "yolov8n", "--out", str(run), "--config", str(cfg)],
             f"yolov8n from scratch, {recipe['epochs']} epoch(s) at {recipe['imgsz']} px -> {run}"):
        return result
    if stage(7, "eval", ["eval", str(run), "--data", str(data), "--split", "test", "--json", str(work / "eval.json")],
             "COCO mAP on the held-out test split"):
        return result
    coco = json.loads((work / "eval.json").read_text())["coco"]
    result.numbers.update(map50=coco.get("map50"), map50_95=coco.get("map50_95"))
    if stage(8, "export", ["export", str(run), "--out", str(fp32)], f"ONNX with metadata -> {fp32.name}"):
        return result
    judged = ["--no-eval"] if quick else ["--max-drop", "0.02"]  # --quick: nothing learned, nothing to judge
    q = stage(9, "quantize", ["quantize", str(fp32), "--calib", str(data), "--out", str(int8), "--n", "64",
                              *judged, "--latency-runs", "0"],
              f"static INT8 for this CPU, calibrated on train, judged on val -> {int8.name}", ok_codes=(0, 1))
    if result.problem:
        return result
    report = int8.with_suffix(".report.json")
    if report.is_file():
        rep = json.loads(report.read_text())
        result.numbers.update(quantize_verdict=rep.get("verdict"), quantize_reason=rep.get("reason"))
    models = [fp32, int8] if q == 0 and int8.is_file() else [fp32]
    samples = "60" if quick else "662"  # 662: enough for a p99 (MLPerf LoadGen)
    if stage(10, "bench", ["bench", *map(str, models), "--data", str(data), "--split", "test", "--out", str(bench_dir),
                           "--samples", samples, "--throughput-images", "40" if quick else "100"],
             f"latency percentiles, throughput, memory, accuracy of {' and '.join(m.name for m in models)}"):
        return result
    target, ref = (int8, fp32) if len(models) == 2 else (fp32, None)
    rel_args = ["reliability", str(target), "--data", str(data), "--split", "test", "--out", str(rel_dir),
                "--soak-seconds", "3" if quick else "15", "--robustness-images", "4" if quick else "20",
                "--latency-samples", "662"]
    if quick:  # every suite runs; three corruptions at three severities show the robustness table's wiring
        rel_args += ["--corruptions", "gaussian_noise,motion_blur,jpeg", "--severities", "1,3,5"]
    rel_args += ["--reference", str(ref)] if ref is not None else ["--gate", str(work / "gate-no-reference.yaml")]
    if ref is None:
        (work / "gate-no-reference.yaml").write_text("rpc_min: 0.5\nrss_growth_mb_per_h_max: 50\ncrashes_max: 0\n"
                                                    "determinism: true\n", encoding="utf-8")
    stage(11, "reliability", rel_args, f"soak, robustness, determinism, bad input, concurrency; gate on {target.name}",
          ok_codes=(0, 1))
    result.numbers.update(_operating_summary(work, target))
    if (rel_dir / "reliability.json").is_file():
        from edgevision.reliability.gate import Check, explain

        doc = json.loads((rel_dir / "reliability.json").read_text())
        failed = [c for c in doc["gate"]["checks"] if not c["passed"]]
        result.numbers.update(verdict=doc["verdict"], failed=[c["key"] for c in failed],
                              failed_details=[c["detail"] for c in failed],
                              failed_explained=[explain(Check(**c)) for c in failed],
                              report=str(rel_dir / "reliability.html"), bench_report=str(bench_dir / "bench.html"))
        bench = json.loads((bench_dir / "bench.json").read_text())
        result.numbers["latency"] = {m["name"]: m["configs"][0]["pipeline"] for m in bench["models"]}
    return result


def _operating_summary(work: Path, model: Path) -> dict[str, Any]:
    """What the line would decide with: the model's operating points and each class's rule, the test split's
    escape and false-reject rates at them (from the eval stage, with their 95% intervals), and how many
    detections a random-noise image gets (a degenerate operating point rejects it)."""
    import json

    from edgevision.evaluate.operating import decisions_summary
    from edgevision.runtime import Detector

    out: dict[str, Any] = {}
    eval_json = work / "eval.json"
    if eval_json.is_file():
        doc = json.loads(eval_json.read_text())
        out["decisions"] = decisions_summary(doc.get("decisions"))
        op = doc.get("operating") or {}
        rule = op.get("rule") or {}
        if rule:
            from edgevision.evaluate.operating import SelectionRule

            out["rule"] = SelectionRule(**{k: v for k, v in rule.items() if k != "mode"}).describe()
    if model.is_file():
        det = Detector(model, threads=1)
        thr, rules = det.metadata.class_thresholds() or {}, det.operating_rules or {}
        out["operating"] = {n: {"threshold": thr.get(n), "rule": rules.get(n)} for n in det.names}
        noise = np.random.default_rng(0).integers(0, 256, (*det.metadata.input.size_hw, 3), dtype=np.uint8)
        out["noise_detections"] = len(det(noise))
    return out
