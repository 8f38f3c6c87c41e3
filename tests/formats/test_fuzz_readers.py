"""Property-based fuzzing of every reader (and the writers after it) over malformed input.

A valid minimal dataset is written for each format, then hypothesis replaces some of its values with
junk: numbers of every kind (bools, NaN, +-inf, 1e308, 5,000-digit integers, negative, fractional),
strings where numbers belong and numbers where strings belong, nested lists and objects, nesting
far deeper than any format needs, absurd image sizes (PNG headers declaring 100000x100000). The
property: reading under every error policy either succeeds or raises an `EdgeVisionError` with a
one-line message, never another exception; and a dataset read under ``fail`` can be written by
every writer with the same guarantee. A few CLI cases check exit 2, one line and no output.
"""

from __future__ import annotations

import base64
import copy
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevision.core.errors import EdgeVisionError
from tests.formats.format_io import read_as, write_as
from tests.formats.test_hostile_input import assert_one_line_exit_2, png_header
from tests.helpers import run_cli, tree_digest

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Bounded runs (the whole file takes well under a minute on 2 cores), the same examples every run."""

H, W = 48, 64


# -- junk values -------------------------------------------------------------------------------
class Raw:
    """A piece of JSON/YAML text no encoder writes (a 5,000-digit integer, 100,000 nested brackets)."""

    def __init__(self, text: str) -> None:
        self.text = text


RAWS = [Raw("9" * 5000), Raw("-" + "1" * 4400), Raw("1" + "0" * 400), Raw("1e999"), Raw("-1e999"), Raw("NaN"),
        Raw("[" * 150 + "]" * 150), Raw("[" * 100_000 + "]" * 100_000), Raw('{"a":' * 120 + "1" + "}" * 120)]

numbers = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324, 0.5, 64.5, 1e9]),
    st.floats(allow_nan=True, allow_infinity=True),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from(["", "1", "64", "nan", "inf", "1e308", "-5", "x", "a.jpg",
                                                         "../../etc/passwd", "/abs.jpg", "C:\\a.jpg", "x" * 3000]))
scalars = st.one_of(st.none(), numbers, texts, st.sampled_from(RAWS))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                     st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                    max_leaves=12)

xml_chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
xml_texts = st.one_of(
    st.text(xml_chars, max_size=12),
    st.sampled_from(["", "0", "1", "-1", "64", "48", "64.5", "nan", "NaN", "inf", "-inf", "1e308", "1e999", " 12 ",
                     "0x10", "1_0", "\u0661\u0662", "9" * 5000, "true", "1,2;3,4", "1,2;3,4;5,6", "2,2;30,2;30,30"]),
)


def to_json(doc: Any) -> str:
    """JSON text of ``doc``, with `Raw` pieces spliced in verbatim."""
    raws: list[str] = []

    def default(o: Any) -> str:
        if isinstance(o, Raw):
            raws.append(o.text)
            return f"\u0000RAW{len(raws) - 1}\u0000"
        raise TypeError(type(o).__name__)

    text = json.dumps(doc, default=default)  # NaN and Infinity are written as Python does
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\u0000RAW{i}\u0000"), raw)
    return text


def write_coco(d: Path, doc: Any) -> Path:
    """``d`` as a COCO dataset: ``doc`` as instances_train.json beside images/a.png and images/b.png."""
    (d / "images").mkdir()
    for n in ("a.png", "b.png"):
        (d / "images" / n).write_bytes(IMAGE)
    (d / "instances_train.json").write_text(to_json(doc))
    return d


def to_yaml(doc: Any) -> str:
    """YAML text of ``doc`` (flow style), with `Raw` pieces spliced in verbatim."""
    text = to_json(doc)  # JSON is YAML 1.2; PyYAML reads it too (except NaN/Infinity, which are junk anyway)
    return text.replace("NaN", ".nan").replace("Infinity", ".inf")


def set_path(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    """``doc[p0][p1]... = value`` where the path exists (else nothing)."""
    for key in path[:-1]:
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return
    with suppress(IndexError, TypeError):
        doc[path[-1]] = value


def image_bytes() -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.full((H, W, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


IMAGE = image_bytes()


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="evfuzz") as d:
        yield Path(d)


# -- the property ------------------------------------------------------------------------------
def check(fmt: str, path: Path, options: dict[str, Any] | None = None) -> None:
    """Read ``path`` under every policy: a dataset or a one-line `EdgeVisionError`, nothing else.

    A dataset read under ``fail`` is then written by every writer under the same rule.
    """
    for policy in ("fail", "skip", "keep"):
        try:
            ds, _ = read_as(fmt, path, policy, **(options or {}))
            ds.check()
        except EdgeVisionError as e:
            assert "\n" not in str(e) and len(str(e)) < 1000, str(e)[:2000]
            continue
        if policy == "fail":
            for to in ("coco", "yolo", "voc"):
                with workdir() as out:
                    try:
                        write_as(to, ds, out / "out", images="none")
                    except EdgeVisionError as e:
                        assert "\n" not in str(e), str(e)


def mutations(targets: list[tuple[Any, ...]]) -> st.SearchStrategy[list[tuple[tuple[Any, ...], Any]]]:
    return st.lists(st.tuples(st.sampled_from(targets), junk), min_size=1, max_size=3)


# -- COCO --------------------------------------------------------------------------------------
COCO = {
    "info": {"description": "fuzz"}, "licenses": [],
    "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
               {"id": 2, "file_name": "b.png", "width": W, "height": H}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0,
         "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": [100, 20, H * W - 120]}, "score": 0.5},
    ],
    "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "pit", "supercategory": "defect"}],
}
COCO_TARGETS = [
    ("info",), ("images",), ("annotations",), ("categories",), ("images", 0), ("annotations", 0),
    *[("images", 0, k) for k in ("id", "file_name", "width", "height")], ("images", 1, "width"),
    *[("annotations", 0, k) for k in ("id", "image_id", "category_id", "bbox", "segmentation", "iscrowd",
                                      "attributes", "score", "area")],
    *[("annotations", 0, "bbox", i) for i in range(4)], ("annotations", 0, "segmentation", 0),
    ("annotations", 0, "segmentation", 0, 3),
    ("annotations", 1, "segmentation", "size"), ("annotations", 1, "segmentation", "counts"),
    ("annotations", 1, "segmentation", "size", 0), ("annotations", 1, "score"),
    ("categories", 0, "id"), ("categories", 0, "name"), ("categories", 1), ("categories", 1, "supercategory"),
]


@FUZZ
@given(mutations(COCO_TARGETS))
def test_fuzz_coco(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    doc = copy.deepcopy(COCO)
    for path, value in changes:
        set_path(doc, path, value)
    with workdir() as d:
        write_coco(d, doc)
        check("coco", d / "instances_train.json")


# -- LabelMe -----------------------------------------------------------------------------------
def labelme_base() -> dict[str, Any]:
    return {"version": "5.0.1", "flags": {}, "imagePath": "a.png", "imageData": None, "imageHeight": H, "imageWidth": W,
            "shapes": [{"label": "scratch", "points": [[2, 2], [20, 20]], "shape_type": "rectangle", "group_id": None,
                        "flags": {}, "description": ""},
                       {"label": "pit", "points": [[5, 5], [30, 5], [30, 30]], "shape_type": "polygon"},
                       {"label": "pit", "points": [[40, 20], [45, 20]], "shape_type": "circle", "difficult": True}]}


LABELME_TARGETS = [
    ("imagePath",), ("imageData",), ("imageHeight",), ("imageWidth",), ("shapes",), ("flags",), ("shapes", 0),
    *[("shapes", 0, k) for k in ("label", "points", "shape_type", "group_id", "flags", "description", "difficult")],
    ("shapes", 0, "points", 0), ("shapes", 0, "points", 0, 1), ("shapes", 1, "points"), ("shapes", 2, "points", 1),
]
embedded = st.one_of(
    st.builds(lambda w, h: base64.b64encode(png_header(w, h)).decode(), st.integers(0, 200_000), st.integers(0, 200_000)),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["!!!not base64", "iVBORw0KGgo=", ""]),
)


@FUZZ
@given(mutations(LABELME_TARGETS), st.one_of(st.none(), embedded), st.booleans())
def test_fuzz_labelme(changes: list[tuple[tuple[Any, ...], Any]], data: str | None, with_image: bool) -> None:
    doc = labelme_base()
    if data is not None:
        doc["imageData"] = data
    for path, value in changes:
        set_path(doc, path, value)
    with workdir() as d:
        if with_image:
            (d / "a.png").write_bytes(IMAGE)
        (d / "a.json").write_text(to_json(doc))
        check("labelme", d)


# -- RailSem19 ---------------------------------------------------------------------------------
RAIL = {"frame": "rs00000", "imgHeight": H, "imgWidth": W, "objects": [
    {"label": "sign", "boundingbox": [2, 2, 20, 20]}, {"label": "pole", "polygon": [[5, 5], [30, 5], [30, 30]]},
    {"label": "rail", "polyline": [[1, 40], [60, 40]]},
    {"label": "rail", "polyline-pair": [[[1, 1], [5, 40]], [[10, 1], [15, 40]]]}]}
RAIL_TARGETS = [("frame",), ("imgHeight",), ("imgWidth",), ("objects",), ("objects", 0), ("objects", 0, "label"),
                ("objects", 0, "boundingbox"), ("objects", 0, "boundingbox", 2), ("objects", 1, "polygon"),
                ("objects", 1, "polygon", 0), ("objects", 2, "polyline"), ("objects", 3, "polyline-pair"),
                ("objects", 3, "polyline-pair", 0)]


@FUZZ
@given(mutations(RAIL_TARGETS), st.sampled_from(["skip", "keep"]))
def test_fuzz_railsem19(changes: list[tuple[tuple[Any, ...], Any]], polylines: str) -> None:
    doc = copy.deepcopy(RAIL)
    for path, value in changes:
        set_path(doc, path, value)
    with workdir() as d:
        (d / "jpgs").mkdir()
        (d / "jsons").mkdir()
        (d / "jpgs" / "rs00000.png").write_bytes(IMAGE)
        (d / "jsons" / "rs00000.json").write_text(to_json(doc))
        check("railsem19", d, {"polylines": polylines})


# -- VOC (XML) ---------------------------------------------------------------------------------
VOC_FIELDS = ["filename", "width", "height", "depth", "name", "xmin", "ymin", "xmax", "ymax", "difficult",
              "truncated", "attr_name", "attr_value"]


def voc_xml(v: dict[str, str], deep: int) -> str:
    obj = (f"<object><name>{v['name']}</name><difficult>{v['difficult']}</difficult>"
           f"<truncated>{v['truncated']}</truncated><bndbox><xmin>{v['xmin']}</xmin><ymin>{v['ymin']}</ymin>"
           f"<xmax>{v['xmax']}</xmax><ymax>{v['ymax']}</ymax></bndbox><attributes><attribute><name>{v['attr_name']}"
           f"</name><value>{v['attr_value']}</value></attribute></attributes></object>")
    nested = "<n>" * deep + "</n>" * deep
    return (f"<annotation><filename>{v['filename']}</filename><size><width>{v['width']}</width>"
            f"<height>{v['height']}</height><depth>{v['depth']}</depth></size>{obj}{nested}</annotation>")


@FUZZ
@given(st.dictionaries(st.sampled_from(VOC_FIELDS), xml_texts, min_size=1, max_size=4),
       st.sampled_from([0, 0, 0, 50, 20_000]))
def test_fuzz_voc(changes: dict[str, str], deep: int) -> None:
    values = {"filename": "a.png", "width": str(W), "height": str(H), "depth": "3", "name": "scratch", "xmin": "3",
              "ymin": "3", "xmax": "20", "ymax": "20", "difficult": "0", "truncated": "1", "attr_name": "color",
              "attr_value": "red"}
    values.update(changes)
    with workdir() as d:
        (d / "a.png").write_bytes(IMAGE)
        (d / "a.xml").write_text(voc_xml({k: xml_escape(t) for k, t in values.items()}, deep), encoding="utf-8")
        check("voc", d)


# -- CVAT (XML) --------------------------------------------------------------------------------
CVAT_FIELDS = ["name", "width", "height", "xtl", "ytl", "xbr", "ybr", "rotation", "occluded", "points", "left", "top",
               "mwidth", "mheight", "rle", "attr", "label", "polyline"]


@FUZZ
@given(st.dictionaries(st.sampled_from(CVAT_FIELDS), xml_texts, min_size=1, max_size=4))
def test_fuzz_cvat(changes: dict[str, str]) -> None:
    v = {"name": "a.png", "width": str(W), "height": str(H), "xtl": "2", "ytl": "2", "xbr": "20", "ybr": "20",
         "rotation": "30", "occluded": "0", "points": "2,2;30,2;30,30", "left": "1", "top": "1", "mwidth": "3",
         "mheight": "2", "rle": "1,4,1", "attr": "7", "label": "scratch", "polyline": "1,40;60,40"}
    v.update(changes)
    q = {k: quoteattr(t) for k, t in v.items()}
    xml = (f"<annotations><version>1.1</version><meta><task><labels><label><name>scratch</name></label>"
           f"</labels></task></meta><image id=\"0\" name={q['name']} width={q['width']} height={q['height']}>"
           f"<box label={q['label']} xtl={q['xtl']} ytl={q['ytl']} xbr={q['xbr']} ybr={q['ybr']} "
           f"rotation={q['rotation']} occluded={q['occluded']}><attribute name=\"n\">{xml_escape(v['attr'])}"
           f"</attribute></box><polygon label=\"scratch\" points={q['points']}/>"
           f"<polyline label=\"scratch\" points={q['polyline']}/>"
           f"<mask label=\"scratch\" rle={q['rle']} left={q['left']} top={q['top']} width={q['mwidth']} "
           f"height={q['mheight']}/></image></annotations>")
    with workdir() as d:
        (d / "images").mkdir()
        (d / "images" / "a.png").write_bytes(IMAGE)
        (d / "annotations.xml").write_text(xml, encoding="utf-8")
        check("cvat", d)


# -- YOLO --------------------------------------------------------------------------------------
yolo_tokens = st.one_of(st.sampled_from(["0", "1", "0.5", "0.2", "-1", "2.5", "nan", "inf", "-inf", "1e308", "1e-320",
                                         "1000000000000", "9" * 5000, "0x1", "1_0", "", "a", "\u0661"]),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr))
yolo_lines = st.lists(st.lists(yolo_tokens, min_size=0, max_size=9).map(" ".join), max_size=4)
yaml_docs = st.fixed_dictionaries({}, optional={
    "names": junk, "nc": junk, "path": junk, "train": st.one_of(junk, st.just("images/train")), "val": junk,
})


@FUZZ
@given(yolo_lines, st.one_of(st.none(), yaml_docs), st.sampled_from([None, (100_000, 100_000), (0, 5)]))
def test_fuzz_yolo(lines: list[str], data: dict[str, Any] | None, header: tuple[int, int] | None) -> None:
    with workdir() as d:
        (d / "images" / "train").mkdir(parents=True)
        (d / "labels" / "train").mkdir(parents=True)
        image = png_header(*header) if header else IMAGE
        (d / "images" / "train" / "a.png").write_bytes(image)
        (d / "labels" / "train" / "a.txt").write_text("\n".join(["0 0.5 0.5 0.2 0.2", *lines]) + "\n")
        if data is not None:
            (d / "data.yaml").write_text(to_yaml({"train": "images/train", "names": ["a", "b"], **data}))
        check("yolo", d)


# -- RLE CSV -----------------------------------------------------------------------------------
rle_tokens = st.one_of(st.integers(-5, H * W + 5).map(str), st.integers(-(2**70), 2**70).map(str),
                       st.sampled_from(["9" * 5000, "0", "-0", "+3", "nan", "1.5", "x"]))
rle_values = st.lists(rle_tokens, max_size=8).map(" ".join)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a.png", "a.png", "", "gone.png", "../x.png", "a.png_1"]),
                          st.one_of(st.sampled_from(["1", "1", "2", "0", "-1", "x", "9" * 30, ""]), yolo_tokens),
                          rle_values), min_size=1, max_size=4),
       st.sampled_from([None, [H, W], [1, 1]]))
def test_fuzz_rle_csv(rows: list[tuple[str, str, str]], size_hw: list[int] | None) -> None:
    text = "ImageId,ClassId,EncodedPixels\n" + "".join(f"{i},{c},{e}\n" for i, c, e in rows)
    with workdir() as d:
        (d / "train_images").mkdir()
        (d / "train_images" / "a.png").write_bytes(IMAGE)
        (d / "train.csv").write_text(text)
        check("rle-csv", d, {"size_hw": size_hw} if size_hw else {})


# -- textbox -----------------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.lists(yolo_tokens, max_size=7).map(" ".join), max_size=4), st.booleans())
def test_fuzz_textbox(lines: list[str], with_score: bool) -> None:
    columns = ["x1", "y1", "x2", "y2", "class", *(["score?"] if with_score else [])]
    with workdir() as d:
        (d / "images").mkdir()
        (d / "labels").mkdir()
        (d / "images" / "a.png").write_bytes(IMAGE)
        (d / "labels" / "a.txt").write_text("\n".join(["2 2 20 20 scratch", *lines]) + "\n")
        check("textbox", d, {"columns": columns})


# -- masks -------------------------------------------------------------------------------------
def mask_file(kind: str, size: tuple[int, int], value: int) -> bytes:
    import cv2

    if kind == "header":
        return png_header(100_000, 100_000)
    if kind == "garbage":
        return b"\x89PNG garbage"
    dtype = np.uint16 if kind == "u16" else np.uint8
    arr = np.zeros((*size, 3) if kind == "rgb" else size, dtype=dtype)
    arr[2:10, 3:12] = value
    if kind == "rgb":
        arr[2:5, 3:6, 1] = 7
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


@FUZZ
@given(st.sampled_from(["u8", "u16", "rgb", "header", "garbage"]), st.sampled_from([(H, W), (W, H), (1, 1)]),
       st.integers(0, 65535), st.booleans())
def test_fuzz_masks(kind: str, size: tuple[int, int], value: int, label_map: bool) -> None:
    with workdir() as d:
        (d / "images").mkdir()
        (d / "images" / "a.png").write_bytes(IMAGE)
        folder = d / "masks" if label_map else d / "masks" / "crack"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(mask_file(kind, size, value if kind == "u16" else value % 256))
        check("masks", d, {"values": {1: "crack", 255: "pit"}} if label_map else {})


# -- a few cases through the CLI ---------------------------------------------------------------------
CLI_CASES: dict[str, Callable[[Path], tuple[Path, list[str]]]] = {}


def cli_case(name: str) -> Callable[[Callable[[Path], tuple[Path, list[str]]]], Callable[[Path], tuple[Path, list[str]]]]:
    def register(f: Callable[[Path], tuple[Path, list[str]]]) -> Callable[[Path], tuple[Path, list[str]]]:
        CLI_CASES[name] = f
        return f
    return register


@cli_case("coco rle size of 5000 digits")
def _coco_rle(d: Path) -> tuple[Path, list[str]]:
    doc = copy.deepcopy(COCO)
    doc["annotations"][1]["segmentation"]["size"] = [Raw("9" * 5000), W]
    return write_coco(d, doc), ["--from", "coco"]


@cli_case("coco nan score")
def _coco_score(d: Path) -> tuple[Path, list[str]]:
    doc = copy.deepcopy(COCO)
    doc["annotations"][1]["score"] = "0.5"
    return write_coco(d, doc), ["--from", "coco"]


@cli_case("cvat rotation inf")
def _cvat(d: Path) -> tuple[Path, list[str]]:
    (d / "images").mkdir()
    (d / "images" / "a.png").write_bytes(IMAGE)
    (d / "annotations.xml").write_text(
        f'<annotations><version>1.1</version><image id="0" name="a.png" width="{W}" height="{H}">'
        '<box label="s" xtl="1" ytl="1" xbr="9" ybr="9" rotation="inf"/></image></annotations>')
    return d, ["--from", "cvat"]


@cli_case("rle csv run of 30 digits")
def _rle(d: Path) -> tuple[Path, list[str]]:
    (d / "train_images").mkdir()
    (d / "train_images" / "a.png").write_bytes(IMAGE)
    (d / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.png,1," + "9" * 30 + " 3\n")
    return d, ["--from", "rle-csv"]


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_exit_2_one_line_no_output(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    src, args = CLI_CASES[case](src)
    before = tree_digest(src)
    out = tmp_path / "out"
    res = run_cli("convert", src, out, "--to", "coco", *args)
    assert_one_line_exit_2(res, src, before, out)
