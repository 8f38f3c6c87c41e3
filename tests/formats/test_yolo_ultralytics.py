"""Written YOLO datasets load in Ultralytics' own dataset checker with the same box counts.

Runs where the ``train`` extra is installed (CI installs it); skips cleanly elsewhere. Ultralytics
is pointed at a settings folder inside the test's tmp dir and told it is offline, so it writes
nothing to ``~/.config`` and downloads nothing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgevision.convert import read_dataset, write_dataset
from edgevision.data.synth import synth

# find_spec, not importorskip: importing Ultralytics in the test process patches PIL.Image.open
# for every other test (it tries to pip-install a HEIF plugin on unreadable files).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the train extra (Ultralytics) is not installed", allow_module_level=True)

_CHECK = textwrap.dedent(
    """
    import json, sys
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.data.dataset import YOLODataset

    data = check_det_dataset(sys.argv[1], autodownload=False)
    out = {"nc": data["nc"], "names": list(data["names"].values()), "splits": {}}
    for split in ("train", "val", "test"):
        if not data.get(split):
            continue
        ds = YOLODataset(img_path=data[split], data=data, task="detect", augment=False, cache=False)
        labels = ds.get_labels()
        out["splits"][split] = {"images": len(labels), "boxes": int(sum(len(l["bboxes"]) for l in labels))}
    print("RESULT" + json.dumps(out))
    """
)


def _ultralytics_view(data_yaml: Path, tmp: Path) -> dict:
    env = dict(os.environ, YOLO_CONFIG_DIR=str(tmp / "ultralytics-settings"), YOLO_OFFLINE="1",
               YOLO_AUTOINSTALL="False", YOLO_VERBOSE="False")
    res = subprocess.run([sys.executable, "-c", _CHECK, str(data_yaml.resolve())], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT"))
    import json

    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_written_yolo_loads_in_ultralytics_checker(tmp_path):
    ds = synth(tmp_path / "render", n=30, seed=1, imgsz=96)
    # round trip through COCO first so the YOLO written is from a real read, not the generator
    write_dataset(ds, tmp_path / "coco", "coco")
    coco = read_dataset(tmp_path / "coco").dataset
    write_dataset(coco, tmp_path / "yolo", "yolo")
    view = _ultralytics_view(tmp_path / "yolo" / "data.yaml", tmp_path)
    assert view["names"] == coco.labels.names and view["nc"] == len(coco.labels)
    for split in coco.splits:
        recs = coco.split(split)
        assert view["splits"][split] == {"images": len(recs), "boxes": sum(len(r) for r in recs)}, split


def test_corrupt_image_is_one_error_even_after_ultralytics_patched_pil(tmp_path):
    """Ultralytics patches PIL.Image.open on import (HEIF plugin fetch); our reader must still say 'corrupt'."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    code = textwrap.dedent(
        """
        import sys, ultralytics  # noqa: F401  (patches PIL.Image.open)
        from edgevision.core.errors import DatasetError
        from edgevision.core.io import read_image_size
        try:
            read_image_size(sys.argv[1])
        except DatasetError as e:
            print("CODE", e.code)
        """
    )
    env = dict(os.environ, YOLO_CONFIG_DIR=str(tmp_path / "settings"), YOLO_OFFLINE="1", YOLO_AUTOINSTALL="False")
    res = subprocess.run([sys.executable, "-c", code, str(bad)], env=env, capture_output=True, text=True, timeout=300)
    assert "CODE image_corrupt" in res.stdout, res.stderr[-2000:]
