"""Fixtures for the FiftyOne tests: one real FiftyOne database per session, a VOC dataset with
difficult objects and background images, and predictions for it with distinct scores."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if importlib.util.find_spec("fiftyone") is None:  # not importorskip: FiftyOne reads its config on import
    pytest.skip("needs the inspect extra (make test installs it)", allow_module_level=True)


@pytest.fixture(scope="session")
def fo_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A FiftyOne database folder for the session, used by this process and the CLI subprocesses alike."""
    db = tmp_path_factory.mktemp("fiftyone-db")
    old = os.environ.get("EDGEVISION_FIFTYONE_DIR")
    os.environ["EDGEVISION_FIFTYONE_DIR"] = str(db)
    yield db
    if old is None:
        os.environ.pop("EDGEVISION_FIFTYONE_DIR", None)
    else:
        os.environ["EDGEVISION_FIFTYONE_DIR"] = old


@pytest.fixture(scope="session")
def fo(fo_db: Path) -> Any:
    from edgevision.inspect import import_fiftyone

    return import_fiftyone(fo_db)


@pytest.fixture(scope="session")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOC dataset (train / val / test) of 36 synthetic images; every 4th object is difficult."""
    from edgevision.convert import write_dataset
    from edgevision.data.synth import synth

    root = tmp_path_factory.mktemp("voc")
    ds = synth(root / "render", n=36, imgsz=96, background_fraction=0.15)
    k = 0
    for r in ds.images:
        attrs = []
        for _ in range(len(r)):
            attrs.append({"difficult": True} if k % 4 == 3 else {})
            k += 1
        r.attributes = attrs if attrs else None
    write_dataset(ds, root / "voc", "voc")
    return root / "voc"


def fake_predictions(data: Path, out: Path, seed: int = 0) -> Path:
    """EdgeVision predictions JSON for ``data``: most objects found (jittered, sometimes the wrong
    class), some false alarms (background images included), distinct scores."""
    from edgevision.convert import read_dataset

    ds = read_dataset(data).dataset
    rng = np.random.default_rng(seed)
    images = []
    for r in ds.images:
        boxes, cls, sc = [], [], []
        h, w = r.size_hw
        for b, c in zip(r.boxes.tolist(), r.class_ids.tolist()):
            if rng.random() < 0.85:
                j = rng.normal(0, 1.5, 4)
                boxes.append([b[0] + j[0], b[1] + j[1], b[2] + j[2], b[3] + j[3]])
                cls.append(c if rng.random() < 0.9 else (c + 1) % len(ds.labels))
                sc.append(float(rng.uniform(0.1, 1.0)))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            boxes.append([x, y, x + rng.uniform(5, 20), y + rng.uniform(5, 20)])
            cls.append(int(rng.integers(len(ds.labels))))
            sc.append(float(rng.uniform(0.001, 0.7)))
        images.append({"name": r.name, "boxes": boxes, "class_ids": cls, "scores": sc})
    out.write_text(json.dumps({"schema": "edgevision.predictions/1", "classes": ds.labels.names, "images": images}))
    return out


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``edgevision ARGS`` in this process (FiftyOne stays started): ``(exit code, stdout, stderr)``.

    In-process because each fresh interpreter spends seconds importing FiftyOne; the launch test and
    the export after edits use real subprocesses."""
    from edgevision.cli import main
    from edgevision.commands import _present

    monkeypatch.setattr(_present.out, "width", 250)
    monkeypatch.setattr(_present.err, "width", 250)

    def run(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["edgevision", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        o, e_ = capsys.readouterr()
        return code, o, e_

    return run


@pytest.fixture(scope="session")
def voc_preds(voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_predictions(voc, tmp_path_factory.mktemp("preds") / "preds.json")
