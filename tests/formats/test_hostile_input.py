"""Malformed numbers, depths, sizes, types and permissions through the real CLI: one line, exit 2.

Each defect of the hardening issue has its example and at least one other input of the same class.
Every case asserts: exit code 2, exactly one non-empty stderr line (short), no traceback, no output
written (nor a temporary folder left beside it), and the source unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.formats.conformance import write_image
from tests.helpers import run_cli, tree_digest

MAX_LINE = 500
"""Longest error line the CLI may print (`edgevision.cli.MAX_ERROR_LINE`)."""


# -- fixtures written by hand ------------------------------------------------------------------
def png_header(w: int, h: int) -> bytes:
    """A PNG whose header declares ``w x h`` (no real pixel data: only the header is ever read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def coco_doc(**image: Any) -> dict[str, Any]:
    """A one-image, one-box COCO document; ``image`` overrides fields of the image entry."""
    return {
        "info": {"description": "hostile"},
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48, **image}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "scratch"}],
    }


def write_coco(root: Path, doc: dict[str, Any] | str) -> Path:
    """``root/annotations/instances_train.json`` beside ``root/images/train/a.jpg`` (48x64)."""
    write_image(root / "images" / "train" / "a.jpg", (48, 64))
    f = root / "annotations" / "instances_train.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return root


def labelme_doc(**fields: Any) -> dict[str, Any]:
    shape = {"label": "scratch", "points": [[2, 2], [20, 20]], "shape_type": "rectangle", "flags": {}}
    return {"version": "5.0.1", "flags": {}, "shapes": [shape], "imagePath": "a.jpg", "imageData": None,
            "imageHeight": 48, "imageWidth": 64, **fields}


def write_labelme(root: Path, doc: dict[str, Any], image: bool = True) -> Path:
    if image:
        write_image(root / "a.jpg", (48, 64))
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


def write_yolo(root: Path, labels: str = "0 0.5 0.5 0.2 0.2\n", yaml_text: str | None = None) -> Path:
    write_image(root / "images" / "train" / "a.jpg", (48, 64))
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train" / "a.txt").write_text(labels)
    (root / "data.yaml").write_text(yaml_text or "train: images/train\nval: images/train\nnames: [scratch]\n")
    return root


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The issue's YAML "billion laughs": 337 bytes that expand to 9**9 strings."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * width)}]")
        prev = name
    return "\n".join(lines) + f"\nnames: *{prev}\ntrain: images/train\n"


# -- the assertion every case shares -------------------------------------------------------------
def assert_one_line_exit_2(res: subprocess.CompletedProcess[str], src: Path, before: dict[str, str],
                           out: Path, *fragments: str) -> str:
    """Exit 2, one short stderr line containing ``fragments``, no traceback, ``out`` absent, ``src`` unchanged."""
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert len(lines[0]) <= MAX_LINE + len("error: "), len(lines[0])
    for f in fragments:
        assert f in lines[0], lines[0]
    assert not out.exists(), "output written"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary output left"
    assert tree_digest(src) == before, "source modified"
    return lines[0]


def convert_fails(src: Path, tmp_path: Path, *fragments: str, args: tuple[str, ...] = ("--to", "yolo"),
                  target: Path | None = None, runner: Callable[..., Any] = run_cli) -> str:
    """``edgevision convert`` of ``src`` (or ``target`` inside it) must fail with one line."""
    root = src if src.is_dir() else src.parent
    before = tree_digest(root)
    out = tmp_path / "out"
    res = runner("convert", target or src, out, *args)
    return assert_one_line_exit_2(res, root, before, out, *fragments)


# -- 1. tracebacks: numbers, depth, image headers --------------------------------------------------
def test_coco_image_id_of_5000_digits(tmp_path: Path) -> None:
    src = write_coco(tmp_path / "src", json.dumps(coco_doc()).replace('"id": 1, "file_name"', f'"id": {"9" * 5000}, "file_name"'))
    convert_fails(src, tmp_path, "instances_train.json", "5,000 digits")


def test_coco_category_id_of_5000_digits(tmp_path: Path) -> None:
    text = json.dumps(coco_doc()).replace('"category_id": 1', f'"category_id": {"7" * 5000}')
    convert_fails(write_coco(tmp_path / "src", text), tmp_path, "instances_train.json", "digits")


def test_coco_info_nested_100000_levels(tmp_path: Path) -> None:
    text = json.dumps(coco_doc()).replace('{"description": "hostile"}', "[" * 100_000 + "]" * 100_000)
    line = convert_fails(write_coco(tmp_path / "src", text), tmp_path, "instances_train.json", "nested")
    assert "100001 levels" in line


def test_labelme_flags_nested_deeper_than_the_bound(tmp_path: Path) -> None:
    text = json.dumps(labelme_doc()).replace('"flags": {}', '"flags": ' + '{"a": ' * 500 + "1" + "}" * 500, 1)
    (tmp_path / "src").mkdir()
    write_image(tmp_path / "src" / "a.jpg", (48, 64))
    (tmp_path / "src" / "a.json").write_text(text)
    convert_fails(tmp_path / "src", tmp_path, "a.json", "nested", args=("--from", "labelme", "--to", "yolo"))


@pytest.mark.parametrize("size", [(100_000, 100_000), (20_000, 10_000)])
def test_labelme_image_data_with_a_huge_png_header(tmp_path: Path, size: tuple[int, int]) -> None:
    data = base64.b64encode(png_header(*size)).decode()
    src = write_labelme(tmp_path / "src", labelme_doc(imagePath="gone.png", imageData=data), image=False)
    convert_fails(src, tmp_path, "a.json", "pixels", args=("--from", "labelme", "--to", "yolo"))


def test_image_file_with_a_huge_header(tmp_path: Path) -> None:
    """The same class on disk: a YOLO image whose header declares 100000x100000."""
    src = write_yolo(tmp_path / "src")
    (src / "images" / "train" / "a.jpg").unlink()
    (src / "images" / "train" / "a.png").write_bytes(png_header(100_000, 100_000))
    convert_fails(src, tmp_path, "a.png", "pixels")


# -- 1. tracebacks: permissions --------------------------------------------------------------------
def _deny_prefix(probe_dir: Path) -> list[str] | None:
    """A command prefix under which file permissions are enforced, or None when none works here.

    Not root: nothing needed. Root: drop every capability (``setpriv``), which makes mode 000
    binding; checked on a real unreadable file, so the tests skip rather than pass vacuously.
    """
    probe = probe_dir / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        candidates: list[list[str]] = [[]] if os.geteuid() != 0 else []
        if shutil.which("setpriv"):
            candidates.append(["setpriv", "--inh-caps=-all", "--bounding-set=-all"])
        for prefix in candidates:
            r = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r}).read()"], capture_output=True)
            if r.returncode != 0 and b"PermissionError" in r.stderr:
                return prefix
        return None
    finally:
        probe.chmod(0o644)


@pytest.fixture
def denied(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli`` with file permissions enforced (skips where they cannot be)."""
    prefix = _deny_prefix(tmp_path)
    if prefix is None:
        pytest.skip("cannot run with permissions enforced here (root without setpriv)")

    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1", TERM="dumb")

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-m", "edgevision", *map(str, args)],
                              env=env, capture_output=True, text=True, timeout=300)

    def python(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=300)

    run.python = python  # type: ignore[attr-defined]
    return run


@contextmanager
def mode(path: Path, bits: int) -> Iterator[None]:
    old = path.stat().st_mode & 0o777
    path.chmod(bits)
    try:
        yield
    finally:
        path.chmod(old)


def test_unreadable_yolo_label_file(tmp_path: Path, denied: Callable[..., Any]) -> None:
    src = write_yolo(tmp_path / "src")
    label = src / "labels" / "train" / "a.txt"
    with mode(label, 0):
        convert_fails(src, tmp_path, "a.txt", "permission denied", runner=denied)


def test_unreadable_coco_split_is_not_skipped(tmp_path: Path, denied: Callable[..., Any]) -> None:
    src = write_coco(tmp_path / "src", coco_doc())
    write_coco(tmp_path / "other", coco_doc())
    shutil.copy(tmp_path / "other" / "annotations" / "instances_train.json", src / "annotations" / "instances_val.json")
    with mode(src / "annotations" / "instances_val.json", 0):
        convert_fails(src, tmp_path, "instances_val.json", "permission denied", runner=denied)


def test_unreadable_labelme_folder(tmp_path: Path, denied: Callable[..., Any]) -> None:
    src = write_labelme(tmp_path / "src", labelme_doc())
    sub = write_labelme(src / "more", labelme_doc())
    with mode(sub, 0):
        convert_fails(src, tmp_path, "more", "permission denied", args=("--from", "labelme", "--to", "yolo"),
                      runner=denied)


def test_unreadable_source_folder_is_a_file_access_error(tmp_path: Path, denied: Callable[..., Any]) -> None:
    """Through the library (the CLI's argument parser refuses an unreadable SRC itself, as a usage error)."""
    src = write_yolo(tmp_path / "src")
    code = ("from edgevision.convert import read_dataset\nfrom edgevision.core.errors import FileAccessError\n"
            f"try:\n    read_dataset({str(src)!r})\nexcept FileAccessError as e:\n    print(e.code, e)\n")
    with mode(src, 0):
        res = denied.python(code)  # type: ignore[attr-defined]
    assert res.returncode == 0 and res.stdout.startswith("file_unreadable"), (res.stdout, res.stderr)
    assert "permission denied" in res.stdout and str(src) in res.stdout


def test_output_parent_without_write_permission(tmp_path: Path, denied: Callable[..., Any]) -> None:
    src = write_yolo(tmp_path / "src")
    before = tree_digest(src)
    parent = tmp_path / "readonly"
    parent.mkdir()
    with mode(parent, 0o555):
        res = denied("convert", src, parent / "out", "--to", "coco")
        assert_one_line_exit_2(res, src, before, parent / "out", "readonly", "permission denied")
    assert list(parent.iterdir()) == []


# -- 2. silent acceptance of wrong types --------------------------------------------------------------
@pytest.mark.parametrize("bbox", [[[1, 2], [3, 4]], ["1", "2", "3", "4"], [True, 2, 3, 4], [1, 2, 3, [4]]])
def test_coco_bbox_of_the_wrong_type(tmp_path: Path, bbox: list[Any]) -> None:
    doc = coco_doc()
    doc["annotations"][0]["bbox"] = bbox
    line = convert_fails(write_coco(tmp_path / "src", doc), tmp_path, "annotations[0]", "bbox")
    assert "four numbers" in line


@pytest.mark.parametrize(("field", "value"), [
    ("width", float("nan")), ("width", True), ("height", 1e308), ("height", "x"),
    ("height", -48), ("width", 64.5), ("width", [64]),
])
def test_coco_image_size_of_the_wrong_type(tmp_path: Path, field: str, value: Any) -> None:
    line = convert_fails(write_coco(tmp_path / "src", coco_doc(**{field: value})), tmp_path, "images[0]", field)
    assert "expected" in line and "got" in line


@pytest.mark.parametrize("label", [["x"], 5, {"name": "x"}])
def test_labelme_label_that_is_not_a_string(tmp_path: Path, label: Any) -> None:
    doc = labelme_doc()
    doc["shapes"][0]["label"] = label
    convert_fails(write_labelme(tmp_path / "src", doc), tmp_path, "shape[0]", "expected label as a string",
                  args=("--from", "labelme", "--to", "yolo"))


@pytest.mark.parametrize(("field", "value"), [("imageHeight", True), ("imageWidth", "64"), ("imageHeight", 1e308)])
def test_labelme_image_size_of_the_wrong_type(tmp_path: Path, field: str, value: Any) -> None:
    convert_fails(write_labelme(tmp_path / "src", labelme_doc(**{field: value})), tmp_path, "a.json", field,
                  args=("--from", "labelme", "--to", "yolo"))


@pytest.mark.parametrize("points", [[["2", "2"], ["20", "20"]], [[True, 2], [20, 20]], [[[2, 2]], [[20, 20]]]])
def test_labelme_points_of_the_wrong_type(tmp_path: Path, points: Any) -> None:
    doc = labelme_doc()
    doc["shapes"][0]["points"] = points
    convert_fails(write_labelme(tmp_path / "src", doc), tmp_path, "shape[0]", "pairs",
                  args=("--from", "labelme", "--to", "yolo"))


@pytest.mark.parametrize(("xml_size", "fragment"), [("<width>nan</width><height>48</height>", "<width>"),
                                                    ("<width>64</width><height>1e308</height>", "<height>"),
                                                    ("<width>64</width><height>inf</height>", "<height>")])
def test_voc_size_that_is_not_a_whole_number(tmp_path: Path, xml_size: str, fragment: str) -> None:
    src = tmp_path / "src"
    write_image(src / "a.jpg", (48, 64))
    (src / "a.xml").write_text(f"<annotation><filename>a.jpg</filename><size>{xml_size}<depth>3</depth></size>"
                               "<object><name>scratch</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax>"
                               "<ymax>9</ymax></bndbox></object></annotation>")
    convert_fails(src, tmp_path, "a.xml", fragment, args=("--from", "voc", "--to", "yolo"))


@pytest.mark.parametrize("line", ["1000000000000 0.5 0.5 0.2 0.2", "1e308 0.5 0.5 0.2 0.2"])
def test_yolo_class_id_beyond_any_class_count(tmp_path: Path, line: str) -> None:
    """A bare folder has no names: a class id of 10**12 must not make 10**12 class names."""
    src = write_yolo(tmp_path / "src", labels=line + "\n")
    (src / "data.yaml").unlink()
    convert_fails(src, tmp_path, "a.txt", "class id", args=("--from", "yolo", "--to", "coco"))


@pytest.mark.parametrize("yaml_text", ["train: images/train\nnc: 1000000000000\n",
                                       "train: images/train\nnames: [[a, b], c]\n",
                                       "train: images/train\nnames: {0: a, 99999999999: b}\n",
                                       "train: images/train\nnc: true\n"])
def test_yolo_names_of_the_wrong_type_or_size(tmp_path: Path, yaml_text: str) -> None:
    convert_fails(write_yolo(tmp_path / "src", yaml_text=yaml_text), tmp_path, "data.yaml", "names")


# -- 3. YAML alias bombs and other unbounded YAML --------------------------------------------------------
def test_yaml_alias_bomb_data_yaml(tmp_path: Path) -> None:
    src = write_yolo(tmp_path / "src", yaml_text=alias_bomb())
    assert len((src / "data.yaml").read_bytes()) < 400
    t0 = time.perf_counter()
    line = convert_fails(src, tmp_path, "data.yaml", "alias")
    assert time.perf_counter() - t0 < 30  # the whole CLI; the loader itself: tests/core/test_safeload.py
    assert len(line) < 300


@pytest.mark.parametrize("yaml_text", [alias_bomb(levels=10), "a: &a [*a]\nnames: *a\n", "names: " + "[" * 50_000 + "\n",
                                       "names: [a]\nnc: " + "9" * 5000 + "\n"])
def test_other_unbounded_data_yaml(tmp_path: Path, yaml_text: str) -> None:
    convert_fails(write_yolo(tmp_path / "src", yaml_text="train: images/train\n" + yaml_text), tmp_path, "data.yaml")


def test_yaml_alias_bomb_in_a_reader_option(tmp_path: Path) -> None:
    src = write_yolo(tmp_path / "src")
    bomb = "{" + alias_bomb().replace("\n", ", ").rstrip(", ") + "}"
    convert_fails(src, tmp_path, "--option names", args=("--to", "coco", "--option", f"names={bomb}"))


def test_yaml_alias_bomb_as_a_recipe(tmp_path: Path) -> None:
    src = write_yolo(tmp_path / "src")
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(alias_bomb())
    before = tree_digest(src)
    out = tmp_path / "out"
    res = run_cli("convert", src, out, "--to", "coco", "--recipe", recipe)
    assert_one_line_exit_2(res, src, before, out, "bomb.yaml", "alias")


def test_yaml_alias_bomb_as_a_remap_mapping(tmp_path: Path) -> None:
    src = write_yolo(tmp_path / "src")
    mapping = tmp_path / "map.yaml"
    mapping.write_text(alias_bomb().replace("names:", "map:"))
    before = tree_digest(src)
    out = tmp_path / "out"
    res = run_cli("remap", src, out, "--map", mapping)
    assert_one_line_exit_2(res, src, before, out, "map.yaml", "alias")


def test_long_values_are_cut_in_error_lines(tmp_path: Path) -> None:
    """A class name of 1 MB in a duplicate: the error line stays short (head ... tail)."""
    name = "x" * 1_000_000
    src = write_yolo(tmp_path / "src", yaml_text=f"train: images/train\nnames: [{name}, {name}]\n")
    line = convert_fails(src, tmp_path, "duplicates")
    assert "..." in line
