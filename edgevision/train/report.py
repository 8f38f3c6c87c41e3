"""What a run folder says about itself: the environment, the training curves and the model card.

Everything here takes plain data (dicts read from the run folder's JSON/YAML files), so the model
card can be rebuilt from a finished run folder alone, and no training backend is imported.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from edgevision.core.io import sha256_file
from edgevision.train.run import read_history

log = logging.getLogger(__name__)

__all__ = ["PACKAGES", "environment", "model_card", "plot_curves", "sha256_file"]

PACKAGES = (
    "edgevision", "torch", "torchvision", "ultralytics", "albumentations", "onnx", "onnxruntime",
    "numpy", "opencv", "pycocotools", "matplotlib", "pydantic",
)
"""Distributions whose versions `environment` records (``opencv``: whichever OpenCV wheel owns cv2)."""

_OPENCV_DISTS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")

ULTRALYTICS_NOTICE = (
    "This model was trained with Ultralytics, which is licensed under AGPL-3.0. Ultralytics considers "
    "models trained with its software to be covered by AGPL-3.0 unless an Ultralytics Enterprise licence "
    "is held. Check this before shipping the model in a closed product; the torchvision backend "
    "(`--backend torchvision`, BSD-3-Clause) avoids it."
)
"""The licence notice the model card carries for the Ultralytics backend."""

METRIC_DIFFERENCE_NOTE = (
    "EdgeVision's numbers are the COCO reference metric (pycocotools rules: 101-point interpolated "
    "precision, at most 100 detections per image, crowd and ignored objects neither found nor missed). "
    "The backend's own validation differs: Ultralytics keeps up to 300 detections per image, integrates "
    "the 101-point precision curve with the trapezoid rule instead of COCO's sum, has no crowd handling "
    "and drops `difficult` objects when it converts VOC data. Compare models with the EdgeVision numbers."
)


# --------------------------------------------------------------------------------------- environment
def _version(dist: str) -> str | None:
    if dist == "opencv":
        for d in _OPENCV_DISTS:
            v = _version(d)
            if v is not None:
                return v
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        for line in text.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 2)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 2)
    except (AttributeError, ValueError, OSError):
        return None


def _torch_facts() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """torch threads / CUDA build and the visible GPUs; (None, []) when torch is not installed."""
    import importlib.util

    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return None, []
    try:
        import torch
    except Exception as e:  # a broken install must not stop the run from recording the rest
        log.warning("torch is installed but does not import (%s): environment without torch facts", e)
        return None, []
    facts: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "cuda_build": torch.version.cuda,
        "cuda_available": False,
    }
    gpus: list[dict[str, Any]] = []
    try:
        if torch.cuda.is_available():
            facts["cuda_available"] = True
            facts["cudnn"] = torch.backends.cudnn.version()
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpus.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 2),
                             "capability": f"{p.major}.{p.minor}"})
    except Exception as e:  # a driver problem: record it rather than fail the run
        facts["cuda_error"] = f"{e.__class__.__name__}: {e}"
    return facts, gpus


def environment() -> dict[str, Any]:
    """Where the run happened: versions, OS, CPU, RAM, GPUs, threads and the command line.

    The host name and user name are deliberately not recorded: run folders travel between
    companies (to a supplier, into a bug report), and the machine's name is nobody's business.
    torch is imported (when installed) to count threads and list CUDA devices; nothing else heavy.

    Returns:
        JSON-serialisable dict with keys ``python`` (version), ``implementation``, ``packages``
        (``{name: version or None}`` for `PACKAGES`), ``os`` (``platform.platform()``), ``machine``,
        ``cpu`` (``{"model", "cores_logical", "cores_usable"}``), ``ram_gb``, ``torch`` (``{"threads",
        "cuda_build", "cuda_available", ...}`` or None), ``gpus`` (list of ``{"index", "name",
        "memory_gb", "capability"}``) and ``command`` (``sys.argv``).
    """
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    torch_facts, gpus = _torch_facts()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": {name: _version(name) for name in PACKAGES},
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": {"model": _cpu_model(), "cores_logical": os.cpu_count(), "cores_usable": usable},
        "ram_gb": _ram_gb(),
        "torch": torch_facts,
        "gpus": gpus,
        "command": list(sys.argv),
    }


# -------------------------------------------------------------------------------------------- curves
def plot_curves(history_csv: Path, out_png: Path, title: str | None = None) -> Path | None:
    """Draw the training curves of ``history.csv`` (`edgevision.train.run`) into a PNG.

    Two panels against the epoch: the mean training loss, and validation mAP50 and mAP50-95
    (epochs without validation are skipped). Uses matplotlib's object API with the Agg canvas (no
    pyplot, no global backend switch) and its bundled DejaVu font (nothing is downloaded). The file
    is written to a temporary name and renamed, so a reader never sees half a PNG.

    Args:
        history_csv: the run's ``history.csv``.
        out_png: where to write the PNG.
        title: figure title (e.g. the run folder's name).

    Returns:
        ``out_png``, or None (logged) when matplotlib is not installed or the history is empty.
    """
    rows = read_history(Path(history_csv))
    if not rows:
        log.info("no training history in %s: curves not drawn", history_csv)
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        log.warning("matplotlib is not installed: curves not drawn (pip install 'edgevision[plots]')")
        return None

    def series(key: str) -> tuple[list[float], list[float]]:
        pts: list[tuple[float, float]] = []
        for r in rows:
            e, v = r.get("epoch"), r.get(key)
            if e is not None and v is not None and math.isfinite(v):
                pts.append((float(e), float(v)))
        return [e for e, _ in pts], [v for _, v in pts]

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_map = fig.subplots(1, 2)
    x, y = series("train_loss")
    ax_loss.plot(x, y, marker="o" if len(x) < 30 else None, color="tab:blue")
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="mean loss")
    any_val = False
    for key, label, colour in (("val_map50", "mAP50", "tab:green"), ("val_map50_95", "mAP50-95", "tab:orange")):
        x, y = series(key)
        if x:
            any_val = True
            ax_map.plot(x, y, marker="o" if len(x) < 30 else None, label=label, color=colour)
    ax_map.set(title="validation", xlabel="epoch", ylabel="mAP", ylim=(0.0, 1.0))
    if any_val:
        ax_map.legend(loc="lower right")
    else:
        ax_map.text(0.5, 0.5, "not validated yet", ha="center", va="center", transform=ax_map.transAxes)
    for ax in (ax_loss, ax_map):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out_png)
    finally:
        tmp.unlink(missing_ok=True)
    return out_png


# ---------------------------------------------------------------------------------------- model card
def _first(d: Mapping[str, Any] | None, *keys: str) -> Any:
    """The value of the first key present (and not None) in ``d``."""
    if not d:
        return None
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def _md(v: Any) -> str:
    """A value as table-safe markdown text."""
    return str(v).replace("|", "\\|").replace("\n", " ")


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return _md(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _pct(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{100 * v:.1f}%"


def _yes_no(v: Any, no: str = "no") -> str:
    return "yes" if v is True else no if v is False else "—"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


_OVERALL = (  # (label, accepted keys)
    ("mAP50-95", ("map50_95", "mAP50-95", "map")),
    ("mAP50", ("map50", "mAP50")),
    ("mAP75", ("map75", "mAP75")),
    ("AP small", ("ap_small", "map_small")),
    ("AP medium", ("ap_medium", "map_medium")),
    ("AP large", ("ap_large", "map_large")),
    ("AR@100", ("ar100", "ar_100", "mar_100")),
    ("precision", ("precision",)),
    ("recall", ("recall",)),
    ("F1", ("f1",)),
)


def _per_class_rows(per_class: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """``{name: {...}}`` or ``[{"name": ..., ...}]`` or ``{name: ap}`` as (name, dict) pairs."""
    if isinstance(per_class, Mapping):
        return [(str(k), v if isinstance(v, Mapping) else {"ap50_95": v}) for k, v in per_class.items()]
    if isinstance(per_class, Sequence):
        return [(str(v.get("name", v.get("class", "?"))), v) for v in per_class if isinstance(v, Mapping)]
    return []


def _section_model(config: Mapping[str, Any], weights: Mapping[str, Any] | None, classes: list[str]) -> list[str]:
    backend = config.get("backend", "ultralytics")
    arch = _first(weights, "arch") or config.get("model")
    rows = [
        ["name", _md(config.get("model", "—"))],
        ["backend", _md(backend)],
        ["architecture", _md(arch or "—")],
        ["input size", f"{config['imgsz']} × {config['imgsz']} px" if config.get("imgsz") else "—"],
        ["classes", f"{len(classes)}: {_md(', '.join(classes))}" if classes else "—"],
    ]
    out = ["## Model", "", *_table(["", ""], rows), "", "### Weights", ""]
    if not weights:
        out.append("Where the starting weights came from was not recorded.")
    elif weights.get("kind") == "weights":
        out += [
            f"Fine-tuned from pretrained weights `{_md(weights.get('registered') or weights.get('source') or '?')}`.",
            "",
            *_table(["", ""], [
                ["file", f"`{_md(weights.get('path') or '—')}`"],
                ["sha256", f"`{weights.get('sha256') or 'not recorded'}`"],
                ["licence", _md(weights.get("licence") or "unknown")],
                ["origin", _md(weights.get("origin") or "not recorded")],
            ]),
        ]
        if (weights.get("licence") or "unknown") == "unknown":
            out += ["", "The licence of the starting weights is unknown: find it out before shipping this model "
                        "(register the file with `edgevision weights add FILE --licence ...`)."]
    else:
        out.append(f"Trained from scratch: architecture `{_md(arch or '?')}` with randomly initialised weights "
                   "(no pretrained weights, so no third-party weight licence applies).")
    if weights and weights.get("trained_sha256"):
        out += ["", f"Trained weights (`{_md(weights.get('trained_path') or 'weights/best.pt')}`) sha256: "
                    f"`{weights['trained_sha256']}`"]
    return out


def _section_dataset(dataset: Mapping[str, Any] | None, classes: list[str]) -> list[str]:
    out = ["## Dataset", ""]
    if not dataset:
        return [*out, "The dataset was not recorded."]
    rows = [
        ["source", f"`{_md(_first(dataset, 'source', 'path') or '—')}`"],
        ["format", _md(dataset.get("format") or "—")],
        ["recipe", _md(dataset.get("recipe") or "none")],
        ["content hash", f"`{_first(dataset, 'hash', 'content_hash', 'sha256') or 'not recorded'}`"],
        ["grayscale", _yes_no(dataset.get("mono"))],
    ]
    if dataset.get("licence"):
        rows.append(["licence", _md(dataset["licence"])])
    out += [*_table(["", ""], rows), ""]
    if dataset.get("licence_note"):
        out += [f"Licence terms: {_md(dataset['licence_note'])}", ""]
    if dataset.get("research_only") or dataset.get("commercial_use") is False:
        out += ["**The dataset is not licensed for commercial use: do not ship this model in a commercial "
                "product without the publisher's permission.**", ""]
    if dataset.get("citation"):
        out += ["Cite:", "", *(f"> {line}" for line in str(dataset["citation"]).strip().splitlines()), ""]
    splits = dataset.get("splits") or {}
    if splits:
        rows = [[_md(s), _num(_first(v, "images")), _num(_first(v, "objects")), _num(_first(v, "background"))]
                for s, v in splits.items()]
        out += ["Images and objects per split:", "", *_table(["split", "images", "objects", "background images"], rows),
                ""]
    counts = dataset.get("class_counts") or {}
    if classes:
        out += ["Classes (canonical id order):", "",
                *_table(["id", "class", "objects"], [[str(i), _md(n), _num(counts.get(n))] for i, n in enumerate(classes)]),
                ""]
    return out


def _section_training(config: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> list[str]:
    rows = []
    for key, label in (("backend", "backend"), ("model", "model"), ("imgsz", "image size"), ("epochs", "epochs (max)"),
                       ("batch", "batch"), ("device", "device"), ("seed", "seed"), ("patience", "patience"),
                       ("augment", "augmentation preset"), ("difficult", "`difficult` objects"),
                       ("time_hours", "time budget (h)"), ("lr0", "initial learning rate")):
        if config.get(key) is not None:
            rows.append([label, f"`{_md(config[key])}`"])
    aug = config.get("augment")
    if aug:
        try:
            from edgevision.train.augment import describe_preset

            rows.append(["augmentation", _md(describe_preset(str(aug)))])
        except Exception:  # an unknown preset name in an old run folder: keep the name only
            pass
    for key, label in (("epochs_completed", "epochs run"), ("best_epoch", "best epoch"),
                       ("train_time_s", "training time")):
        v = _first(metrics, key)
        if v is not None:
            rows.append([label, f"{v / 60:.1f} min" if key == "train_time_s" else _num(v)])
    return ["## Training", "", *_table(["", ""], rows), "",
            "The full resolved configuration is `config.yaml` in the run folder "
            "(rerun with `edgevision train --config RUN/config.yaml`)."]


def _section_results(metrics: Mapping[str, Any] | None) -> list[str]:
    out = ["## Results", ""]
    if not metrics:
        return [*out, "Not evaluated."]
    where = []
    if metrics.get("split"):
        where.append(f"the `{_md(metrics['split'])}` split")
    if metrics.get("images") is not None:
        where.append(f"{metrics['images']} images")
    if where:
        out += [f"Measured on {', '.join(where)} with EdgeVision's COCO evaluator"
                + (f", `difficult` objects: {_md(metrics['difficult'])}" if metrics.get("difficult") else "")
                + (f", precision/recall at confidence {metrics['conf']}" if metrics.get("conf") is not None else "")
                + ".", ""]
    backend = metrics.get("backend") if isinstance(metrics.get("backend"), Mapping) else None
    bname = _md((backend or {}).get("name", "backend"))
    rows = []
    for label, keys in _OVERALL:
        ours = _first(metrics, *keys)
        theirs = _first(backend, *keys)
        if ours is not None or theirs is not None:
            rows.append([label, _num(ours)] + ([_num(theirs)] if backend else []))
    if rows:
        out += [*_table(["metric", "EdgeVision (COCO)"] + ([f"{bname} (own validation)"] if backend else []), rows), ""]
    if backend:
        out += [_md(backend.get("note") or METRIC_DIFFERENCE_NOTE), ""]
    per = _per_class_rows(metrics.get("per_class"))
    if per:
        cols = [("AP50-95", ("ap50_95", "ap", "map50_95")), ("AP50", ("ap50", "map50")),
                ("precision", ("precision",)), ("recall", ("recall",)), ("objects", ("gt", "objects", "n_gt"))]
        cols = [c for c in cols if any(_first(v, *c[1]) is not None for _, v in per)]
        out += ["Per class:", "",
                *_table(["class", *(c[0] for c in cols)], [[_md(n), *(_num(_first(v, *c[1])) for c in cols)] for n, v in per]),
                ""]
    return out


def _section_operating_points(thresholds: Mapping[str, Any] | None) -> list[str]:
    out = ["## Operating points", ""]
    if not thresholds:
        return [*out, "No operating points were chosen (all detections above the export default confidence count)."]
    target, value, iou = thresholds.get("target"), thresholds.get("value"), thresholds.get("iou")
    rule = thresholds.get("rule_text")
    if rule:
        out += [f"Chosen on the validation split: {_md(rule)}" + (f", at IoU {iou}" if iou is not None else "") + ".",
                ""]
    elif target and value is not None:
        out += [f"Per-class confidence thresholds chosen on the validation split for {_md(target)} ≥ {value}"
                + (f" at IoU {iou}" if iou is not None else "") + ".", ""]
    per = _per_class_rows(thresholds.get("per_class"))
    if per:
        out += [*_table(["class", "threshold", "precision", "recall", "rule"],
                        [[_md(n), _num(_first(v, "threshold", "conf")), _num(_first(v, "precision")),
                          _num(_first(v, "recall")),
                          _md(v["rule"]) if v.get("rule") else _yes_no(v.get("achieved", v.get("met")), no="**no**")]
                         for n, v in per]),
                ""]
    if thresholds.get("note"):
        out += [f"**The rule could not hold on val:** {_md(thresholds['note'])}; the closest point was kept.", ""]
    esc, frr = _first(thresholds, "escape_rate"), _first(thresholds, "false_reject_rate")
    if esc is not None or frr is not None:
        nd, ng = _first(thresholds, "defective_images"), _first(thresholds, "good_images")
        e_txt, f_txt = thresholds.get("escape_text"), thresholds.get("false_reject_text")
        out += ["- **Escape rate** (defective images in which no defect was found): "
                + (_md(e_txt) if e_txt else _pct(esc) + (f" of {nd} defective images" if nd is not None else "")),
                "- **False-reject rate** (defect-free images flagged): "
                + (_md(f_txt) if f_txt else _pct(frr) + (f" of {ng} defect-free images" if ng is not None else ""))]
        cost = thresholds.get("expected_cost")
        if cost:
            out.append(f"- **Expected cost**: {cost['per_1000_parts']:.4g} per 1,000 parts (95% CI "
                       f"{cost['lower']:.4g}-{cost['upper']:.4g}; escape {cost['cost_escape']:g}, false reject "
                       f"{cost['cost_false_reject']:g} per part, defect rate {cost['defect_rate']:.3g})")
        out += ["", "The intervals are exact binomial (Clopper-Pearson) 95% intervals: on few images a rate of 0 "
                "is not a zero. The rates are measured on the images the thresholds were chosen on (optimistic); "
                "`operating_curve.csv` holds the whole image-level trade-off.", ""]
    return out


def _section_environment(env: Mapping[str, Any] | None) -> list[str]:
    out = ["## Environment", ""]
    if not env:
        return [*out, "Not recorded."]
    pk = env.get("packages") or {}
    versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    cpu = env.get("cpu") or {}
    gpus = env.get("gpus") or []
    rows = [
        ["Python", _md(env.get("python", "—"))],
        ["packages", _md(versions or "—")],
        ["OS", _md(env.get("os", "—"))],
        ["CPU", _md(f"{cpu.get('model', '—')} ({cpu.get('cores_usable', '?')} usable of "
                    f"{cpu.get('cores_logical', '?')} logical cores)")],
        ["RAM", f"{env['ram_gb']} GiB" if env.get("ram_gb") else "—"],
        ["GPUs", _md(", ".join(f"{g.get('name')} ({g.get('memory_gb')} GiB)" for g in gpus) or "none")],
    ]
    torch = env.get("torch") or {}
    if torch.get("threads"):
        rows.append(["torch threads", str(torch["threads"])])
    return [*out, *_table(["", ""], rows), "", "Full details: `environment.json`."]


def _section_limits(dataset: Mapping[str, Any] | None, thresholds: Mapping[str, Any] | None,
                    classes: list[str]) -> list[str]:
    train = ((dataset or {}).get("splits") or {}).get("train") or {}
    n_img, n_obj = train.get("images"), train.get("objects")
    what = _first(dataset, "title", "recipe", "source") or "an unrecorded dataset"
    trained_on = (f"{n_img} training images" if n_img is not None else "training images") + \
        (f" ({n_obj} objects)" if n_obj is not None else "") + f" of `{_md(what)}`"
    lines = [
        "## Intended use and limits",
        "",
        f"- Trained on {trained_on}, to find " + (_md(", ".join(classes)) if classes else "the dataset's classes")
        + ". It knows no other defect types.",
        "- Not validated on other lines, products, cameras or sites. Re-validate (`edgevision eval`) after any "
        "change of camera, lens, lighting, product, line speed or image pipeline, before relying on it.",
        "- The metrics come from the validation split of the same source; images from another line or camera "
        "will usually score lower.",
    ]
    if thresholds:
        lines.append("- Use the per-class thresholds above; they travel with the model into export. Rates at "
                     "other thresholds differ.")
    lines.append("- A detector supports inspection; it does not replace the QA sign-off of the escape rate "
                 "on the production line.")
    return lines


def _section_licences(config: Mapping[str, Any], weights: Mapping[str, Any] | None,
                      dataset: Mapping[str, Any] | None) -> list[str]:
    out = ["## Licences", ""]
    backend = config.get("backend", "ultralytics")
    if backend == "ultralytics":
        out.append(f"- **Ultralytics (AGPL-3.0).** {ULTRALYTICS_NOTICE}")
    elif backend == "torchvision":
        out.append("- Training code: torchvision (BSD-3-Clause).")
    elif backend == "libreyolo":
        out.append("- Training code: LibreYOLO (MIT); YOLOv9 architecture after MultimediaTechLab/YOLO (MIT).")
    if weights and weights.get("kind") == "weights":
        out.append(f"- Starting weights: {_md(weights.get('licence') or 'unknown')}.")
    if dataset and dataset.get("licence"):
        out.append(f"- Training data: {_md(dataset['licence'])}"
                   + (" (not for commercial use)." if dataset.get("research_only") or dataset.get("commercial_use") is False
                      else "."))
    out.append("- EdgeVision itself: Apache-2.0.")
    return out


def model_card(
    *,
    config: Mapping[str, Any],
    dataset: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    weights: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> str:
    """A markdown model card: what was trained on what, how well, where, and under which licences.

    Every argument is plain data from the run folder; every section but ``config`` may be missing
    (the card then says "not recorded"). Unknown keys are ignored. Where two key names are listed,
    either is read.

    Args:
        config: ``TrainConfig.to_yaml_dict()`` (``backend``, ``model``, ``imgsz``, ``epochs``,
            ``batch``, ``device``, ``seed``, ``patience``, ``augment``, ``difficult``, ...).
        dataset: ``dataset.json``: ``source``/``path``, ``format``, ``recipe``, ``title``,
            ``hash``/``content_hash``, ``classes``/``names`` (list, canonical order), ``mono``,
            ``splits`` (``{split: {"images", "objects", "background"}}``), ``class_counts``
            (``{name: objects}``), and from the recipe ``licence``, ``licence_note``, ``citation``,
            ``commercial_use``, ``research_only``.
        metrics: ``metrics.json``: overall ``map50_95``, ``map50``, ``map75``, ``ap_small``,
            ``ap_medium``, ``ap_large``, ``ar100``, ``precision``, ``recall``, ``f1``; ``split``,
            ``images``, ``conf``, ``difficult``; ``per_class`` as ``{name: {"ap50_95", "ap50",
            "precision", "recall", "gt"}}`` or a list of such dicts with ``name``; ``backend`` as
            ``{"name", "map50", "map50_95", "note"}`` (the backend's own validation numbers); run
            facts ``epochs_completed``, ``best_epoch``, ``train_time_s``.
        thresholds: ``thresholds.json``: ``target``, ``value``, ``iou``, ``per_class`` as
            ``{name: {"threshold", "precision", "recall", "achieved"}}``, ``escape_rate``,
            ``false_reject_rate``, ``defective_images``, ``good_images``.
        environment: `environment` output.
        weights: ``ModelSpec.to_dict()`` of ``edgevision.train.weights`` (``kind`` ``weights`` or
            ``arch``, ``source``, ``arch``, ``path``, ``sha256``, ``licence``, ``origin``,
            ``registered``) plus optionally ``trained_sha256`` / ``trained_path`` of ``best.pt``.
        title: the card's heading (default: ``Model card: <model>``).

    Returns:
        Markdown text ending in a newline.
    """
    classes = [str(c) for c in (_first(dataset, "classes", "names") or [])]
    name = title or f"Model card: {config.get('model', 'model')}"
    sections = [
        [f"# {_md(name)}", ""],
        _section_model(config, weights, classes),
        _section_dataset(dataset, classes),
        _section_training(config, metrics),
        _section_results(metrics),
        _section_operating_points(thresholds),
        _section_environment(environment),
        _section_limits(dataset, thresholds, classes),
        _section_licences(config, weights, dataset),
    ]
    lines: list[str] = []
    for s in sections:
        while s and s[-1] == "":
            s = s[:-1]
        lines += [*s, ""]
    return "\n".join(lines).rstrip("\n") + "\n"
