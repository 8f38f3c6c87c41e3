"""Property: COCO -> YOLO -> COCO keeps every image, every class name and every box (within 1e-3 px)."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevision.core import Dataset, ImageRecord, LabelMap
from tests.formats.format_io import read_as, write_as

MAX_SIDE = 8000


def write_blank_png(path: Path, size_hw: tuple[int, int]) -> Path:
    """A real 1-bit PNG of ``size_hw`` (all black): an 8000x8000 image is a few kB and takes milliseconds."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = size_hw
    pixels = zlib.compress(b"\x00" * ((1 + (w + 7) // 8) * h), 1)
    header = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


class_names = st.lists(
    st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=10),
    min_size=1, max_size=5, unique=True,
)


@st.composite
def images(draw: st.DrawFn, n_classes: int, index: int) -> ImageRecord:
    h = draw(st.integers(8, MAX_SIDE))
    w = draw(st.integers(8, MAX_SIDE))
    unit = st.floats(0, 1, allow_nan=False)
    boxes, classes = [], []
    for _ in range(draw(st.integers(0, 4))):  # 0: a background image
        a, b, c, d = (draw(unit) for _ in range(4))
        x1, y1 = a * (w - 1), c * (h - 1)
        boxes.append([x1, y1, x1 + 1 + b * (w - 1 - x1), y1 + 1 + d * (h - 1 - y1)])  # >= 1 px, inside the image
        classes.append(draw(st.integers(0, n_classes - 1)))
    tag = draw(st.text(alphabet="aZé ü_-", max_size=5))
    split = draw(st.sampled_from([None, "train", "val", "test"]))
    return ImageRecord(f"{index:02d} {tag}.png", (h, w), boxes=np.array(boxes).reshape(-1, 4), class_ids=classes,
                       split=split)


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    names = draw(class_names)
    n = draw(st.integers(1, 4))
    return Dataset(LabelMap(names), [draw(images(len(names), i)) for i in range(n)])


def convert(ds: Dataset, fmt: str, out: Path) -> Dataset:
    write_as(fmt, ds, out)
    return read_as(fmt, out)[0]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for all examples (pytest prunes it; deleting trees per example is slow on some disks)."""
    return tmp_path_factory.mktemp("roundtrip")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=datasets())
def test_coco_yolo_coco_keeps_images_classes_and_boxes(scratch: Path, spec: Dataset) -> None:
    root = Path(tempfile.mkdtemp(dir=scratch))
    for r in spec.images:
        r.path = write_blank_png(root / "src" / r.name, r.size_hw)
    coco = convert(spec, "coco", root / "coco")
    yolo = convert(coco, "yolo", root / "yolo")
    back = convert(yolo, "coco", root / "back")

    assert back.labels.names == spec.labels.names
    got = {r.name: r for r in back.images}
    assert sorted(got) == sorted(r.name for r in spec.images)
    for r in spec.images:
        g = got[r.name]
        assert g.size_hw == r.size_hw and g.split == (r.split or "train")
        assert g.class_ids.tolist() == r.class_ids.tolist()  # both formats keep the object order
        np.testing.assert_allclose(g.boxes, r.boxes.reshape(-1, 4), atol=1e-3, rtol=0)
