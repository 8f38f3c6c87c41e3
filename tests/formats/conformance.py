"""The conformance suite every readable format inherits.

A format's test class subclasses `FormatConformance`, sets ``format_name`` (and ``box_tol`` if its
coordinates are rounded), and implements `build`: write, by hand and in the format's real on-disk
layout, the annotation files for the golden `Spec` (never with EdgeVision's own writer, so a reader
and writer bug cannot cancel out). The base class then checks detection, reading the golden
fixture, unicode and spaces in file names, background images, a write/read round trip for writable
formats, and that a truncated annotation file is a one-line `DatasetError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from edgevision.core import Dataset, DatasetError, ImageRecord, LabelMap, Report
from edgevision.formats import WriteOptions, detect_format, get_format
from edgevision.formats.base import Losses
from tests.formats.format_io import read_as


def write_image(path: Path, size_hw: tuple[int, int], seed: int = 0) -> Path:
    """Write a real, decodable image of ``size_hw`` (JPEG or PNG by suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (*size_hw, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())  # cv2.imwrite cannot write non-ASCII paths on every platform
    return path


def golden_spec() -> Dataset:
    """Three images: two with objects (one with a unicode name and spaces), one background."""
    labels = LabelMap(["scratch", "pit hole"])
    return Dataset(
        labels=labels,
        images=[
            ImageRecord("line 01.jpg", (48, 64), boxes=[[4, 6, 20, 30], [30, 10, 60, 40]], class_ids=[0, 1]),
            ImageRecord("défaut ü 02.png", (60, 80), boxes=[[10, 12, 50, 58]], class_ids=[1]),
            ImageRecord("empty.jpg", (32, 32)),
        ],
    )


def by_basename(ds: Dataset) -> dict[str, ImageRecord]:
    return {Path(r.name).name: r for r in ds.images}


def assert_same_dataset(got: Dataset, expected: Dataset, box_tol: float = 1e-6) -> None:
    """Same images (by base name), sizes, objects (as class name + box within ``box_tol``)."""
    g, e = by_basename(got), by_basename(expected)
    assert sorted(g) == sorted(e), f"images differ: got {sorted(g)}, expected {sorted(e)}"
    for name, er in e.items():
        gr = g[name]
        assert gr.size_hw == er.size_hw, f"{name}: size {gr.size_hw} != {er.size_hw}"
        assert len(gr) == len(er), f"{name}: {len(gr)} objects, expected {len(er)}"

        def objects(r: ImageRecord, ds: Dataset) -> list[tuple[str, list[float]]]:
            return sorted((ds.labels.names[c], b.tolist()) for c, b in zip(r.class_ids, r.boxes))

        for (gc, gb), (ec, eb) in zip(objects(gr, got), objects(er, expected)):
            assert gc == ec, f"{name}: class {gc} != {ec}"
            np.testing.assert_allclose(gb, eb, atol=box_tol, err_msg=f"{name}: {gc}")
    used = {expected.labels.names[c] for r in expected.images for c in r.class_ids}
    assert used <= set(got.labels.names)


class FormatConformance:
    """Inherit, set ``format_name``, implement `build`. Tests run for every subclass."""

    format_name: ClassVar[str]
    box_tol: ClassVar[float] = 1e-6
    #: whether `detect_format` can pick this format without --from (False for formats that need a recipe)
    detectable: ClassVar[bool] = True

    def build(self, root: Path, spec: Dataset) -> Path:
        """Write ``spec`` (images included, via `write_image`) in this format under ``root``.

        Returns:
            The path a user would pass to ``convert`` (a file or a folder).
        """
        raise NotImplementedError

    def read_options(self) -> dict:
        """Reader options the fixture needs (recipe-driven formats override this)."""
        return {}

    def annotation_file(self, built: Path) -> Path:
        """One annotation file inside the fixture, truncated by the bad-input test."""
        if built.is_file():
            return built
        files = sorted(p for p in built.rglob("*") if p.suffix.lower() in (".json", ".xml", ".txt", ".csv"))
        assert files, "no annotation file found; override annotation_file()"
        return files[0]

    # -- helpers ------------------------------------------------------------------------------
    def read(self, path: Path, on_error: str = "fail") -> tuple[Dataset, Report]:
        return read_as(self.format_name, path, on_error, **self.read_options())

    @pytest.fixture
    def built(self, tmp_path: Path) -> Path:
        return self.build(tmp_path / "src", golden_spec())

    # -- the suite ----------------------------------------------------------------------------
    def test_detect(self, built: Path) -> None:
        if not self.detectable:
            pytest.skip("format is chosen by recipe or --from, not detected")
        fmt, det = detect_format(built)
        assert fmt.name == self.format_name, f"detected {fmt.name} ({det.reason})"
        assert det.reason

    def test_read_golden(self, built: Path) -> None:
        ds, report = self.read(built)
        assert_same_dataset(ds, golden_spec(), self.box_tol)
        assert not report.errors
        for r in ds.images:
            assert r.path is not None and r.path.is_file(), f"{r.name}: image path not resolved"

    def test_unicode_and_spaces_in_names(self, built: Path) -> None:
        ds, _ = self.read(built)
        names = {Path(r.name).name for r in ds.images}
        assert "défaut ü 02.png" in names and "line 01.jpg" in names

    def test_background_image_is_kept(self, built: Path) -> None:
        ds, _ = self.read(built)
        empty = by_basename(ds)["empty.jpg"]
        assert empty.is_background and empty.size_hw == (32, 32)

    def test_write_read_round_trip(self, built: Path, tmp_path: Path) -> None:
        fmt = get_format(self.format_name)
        if not fmt.can_write:
            pytest.skip("read-only format")
        ds, _ = self.read(built)
        out = tmp_path / "out"
        out.mkdir()
        fmt.write(ds, out, WriteOptions(images="copy"), Losses())
        back = fmt.read(out, fmt.parse_options({}), Report("fail"))
        assert_same_dataset(back, golden_spec(), self.box_tol)
        assert get_format(self.format_name).detect(out) is not None

    def test_truncated_annotation_is_one_line_error(self, built: Path) -> None:
        f = self.annotation_file(built)
        data = f.read_bytes()
        f.write_bytes(data[: max(1, len(data) // 2)] + b"\x00{<")
        with pytest.raises(DatasetError) as exc:
            self.read(built)
        msg = str(exc.value)
        assert "\n" not in msg and f.name in msg, msg
