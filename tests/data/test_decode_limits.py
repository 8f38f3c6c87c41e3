"""The pixel limit holds before every decoder that reads dataset images, not only in the runtime.

The probe's bomb (a JPEG whose truncated Adobe APP14 segment hides a 12000x12000 frame header from
Pillow, decoded by OpenCV) and a plain oversized PNG header are refused from their header at each place
that calls ``cv2.imdecode`` on a user's file: tiling, the mask reader, the torchvision backend's reader
and the augmentation's grey / colour probe. The decoder must never run on them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.core.dataset import ImageRecord
from edgevision.core.errors import DatasetError
from edgevision.core.report import Report
from tests.runtime.bombs import jpeg_truncated_app14

BOMBS = {"jpeg_app14": jpeg_truncated_app14, "png_header": None}


def _png_bomb() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(params=["jpeg_app14", "png_header"])
def bomb(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = jpeg_truncated_app14(40000, 40000) if request.param == "jpeg_app14" else _png_bomb()
    path = tmp_path / ("bomb.jpg" if request.param == "jpeg_app14" else "bomb.png")
    path.write_bytes(data)

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("cv2.imdecode ran on an image over the pixel limit")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    return path


def test_tile_refuses_from_the_header(bomb: Path) -> None:
    from edgevision.data.tile import read_pixels

    rec = ImageRecord(name=bomb.name, path=bomb, size_hw=(100, 100), boxes=np.zeros((0, 4), np.float32),
                      class_ids=np.zeros((0,), np.int64))
    with pytest.raises(DatasetError) as e:
        read_pixels(rec, Report("fail"))
    assert e.value.code == "image_too_large" and "MP" in str(e.value)
    report = Report("keep")  # lenient: recorded, the image left out of the tiles
    assert read_pixels(rec, report) is None
    assert [f.code for f in report.findings] == ["image_too_large"]
    assert report.findings[0].message.count(bomb.name) == 1


def test_torchvision_reader_refuses_from_the_header(bomb: Path) -> None:
    pytest.importorskip("torch")
    from edgevision.train.torchvision_backend import read_image_rgb

    with pytest.raises(DatasetError) as e:
        read_image_rgb(bomb)
    assert e.value.code == "image_too_large"


def test_augment_probe_refuses_from_the_header(bomb: Path) -> None:
    from edgevision.train.augment import _read_unchanged

    with pytest.raises(DatasetError) as e:
        _read_unchanged(bomb)
    assert e.value.code == "image_too_large"


def test_ordinary_images_still_decode(tmp_path: Path) -> None:
    from edgevision.train.augment import _read_unchanged

    img = np.full((20, 30, 3), 7, np.uint8)
    cv2.imwrite(str(tmp_path / "ok.png"), img)
    assert np.array_equal(_read_unchanged(tmp_path / "ok.png"), img)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert _read_unchanged(tmp_path / "junk.png") is None


def test_validate_reports_the_bomb_without_decoding(bomb: Path) -> None:
    from edgevision.data.validate import image_findings, inspect_image

    facts = inspect_image(bomb)
    assert facts.problem is not None and facts.problem[0] == "image_too_large" and "MP" in facts.problem[1]
    rec = ImageRecord(name=bomb.name, path=bomb, size_hw=(100, 100))
    assert [f.code for f in image_findings([rec], [facts])] == ["image_too_large"]
