"""Tiny copies of public datasets in their real published layout, written by hand for the recipe tests.

Each builder writes a few small images and annotation files exactly where and how the published
dataset has them (folder names, file-name patterns, the files' own quirks, the archive's nesting, and
the files published beside the data: READMEs, licences, illustrations, config files, a sample
submission) and returns the path a user passes to ``convert`` with what reading it through the
recipe must give. Nothing here uses EdgeVision's writers, and no real data is copied.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tests.formats.conformance import write_image


@dataclass(frozen=True)
class Expected:
    """What a fixture holds once read through its recipe.

    Attributes:
        images: number of image records (background images included).
        boxes: number of objects.
        classes: objects per class name (classes without objects left out).
        splits: images per split, when the recipe gives splits.
        findings: finding codes the read must report (quirks handled).
        outside: the files published beside the data (relative to the folder read, sorted) that the
            read leaves out and names in its one ``file_outside_layout`` finding.
        detected: the format ``--from auto`` picks for the folder, or None when only the recipe
            reads it (no format is detected).
    """

    images: int
    boxes: int
    classes: dict[str, int]
    splits: dict[str, int] = field(default_factory=dict)
    findings: tuple[str, ...] = ()
    outside: tuple[str, ...] = ()
    detected: str | None = None


def voc_xml(filename: str, size_wh: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int]]],
            *, folder: str = "JPEGImages", depth: int = 3) -> str:
    """A Pascal VOC annotation as labelImg-style tools write it (1-based inclusive boxes)."""
    objs = "".join(
        f"""
	<object>
		<name>{name}</name>
		<pose>Unspecified</pose>
		<truncated>0</truncated>
		<difficult>0</difficult>
		<bndbox>
			<xmin>{x1}</xmin>
			<ymin>{y1}</ymin>
			<xmax>{x2}</xmax>
			<ymax>{y2}</ymax>
		</bndbox>
	</object>"""
        for name, (x1, y1, x2, y2) in objects
    )
    return f"""<annotation>
	<folder>{folder}</folder>
	<filename>{filename}</filename>
	<source>
		<database>Unknown</database>
	</source>
	<size>
		<width>{size_wh[0]}</width>
		<height>{size_wh[1]}</height>
		<depth>{depth}</depth>
	</size>
	<segmented>0</segmented>{objs}
</annotation>
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _write_mask(path: Path, size_hw: tuple[int, int], rects: list[tuple[int, int, int, int]]) -> Path:
    """A 0/255 single-channel PNG with the given ``(x1, y1, x2, y2)`` pixel rectangles filled."""
    mask = np.zeros(size_hw, dtype=np.uint8)
    for x1, y1, x2, y2 in rects:
        mask[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", mask)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


# -- one builder per recipe --------------------------------------------------------------------
def build_neu_det(root: Path) -> tuple[Path, Expected]:
    """NEU-DET: ANNOTATIONS/ + IMAGES/ and a Validation_* pair; patches XML without '.jpg'."""
    src = root / "NEU-DET"
    pairs = [
        ("ANNOTATIONS", "IMAGES", "crazing_1", "crazing_1.jpg", "cr", [("crazing", (2, 2, 193, 194))]),
        ("ANNOTATIONS", "IMAGES", "patches_104", "patches_104", "pa",
         [("patches", (43, 10, 106, 97)), ("patches", (32, 91, 81, 148))]),
        ("ANNOTATIONS", "IMAGES", "rolled-in_scale_7", "rolled-in_scale_7.jpg", "rs",
         [("rolled-in_scale", (1, 1, 200, 200))]),
        ("Validation_Annotations", "Validation_Images", "pitted_surface_110", "pitted_surface_110", "ps",
         [("pitted_surface", (20, 30, 60, 90))]),
    ]
    for i, (ann, img, stem, filename, folder, objs) in enumerate(pairs):
        write_image(src / img / f"{stem}.jpg", (200, 200), seed=i)
        _write(src / ann / f"{stem}.xml", voc_xml(filename, (200, 200), objs, folder=folder, depth=1))
    return src, Expected(4, 5, {"crazing": 1, "patches": 2, "rolled-in_scale": 1, "pitted_surface": 1},
                         {"train": 3, "val": 1}, ("image_name_quirk",), detected="voc")


def build_neu_det_kaggle(root: Path) -> tuple[Path, Expected]:
    """NEU-DET as the Kaggle copy has it: {train,validation}/annotations/ + images/<class>/."""
    src = root / "NEU-DET"
    samples = [
        ("train", "crazing", "crazing_12", [("crazing", (5, 7, 180, 60))]),
        ("train", "patches", "patches_3", [("patches", (1, 1, 90, 90)), ("patches", (100, 120, 150, 199))]),
        ("validation", "scratches", "scratches_241", [("scratches", (60, 2, 75, 200))]),
    ]
    for i, (split, cls, stem, objs) in enumerate(samples):
        write_image(src / split / "images" / cls / f"{stem}.jpg", (200, 200), seed=i)
        _write(src / split / "annotations" / f"{stem}.xml", voc_xml(f"{stem}.jpg", (200, 200), objs, depth=1))
    return src, Expected(3, 4, {"crazing": 1, "patches": 2, "scratches": 1}, {"train": 2, "val": 1},
                         ("image_name_quirk",), detected="voc")


def build_gc10_det(root: Path) -> tuple[Path, Expected]:
    """GC10-DET: images in class folders 1..10, XMLs in 'lable/', pinyin names, a typo and a 'd';
    the repository's README and its illustration of the ten classes at the top."""
    src = root / "GC10-DET"
    size_wh = (128, 64)  # real images are 2048x1000; small keeps the test fast
    files = [
        ("1", "img_01_3402617700_00001", [("1_chongkong", (10, 10, 30, 30)), ("7_yiwu", (50, 20, 70, 40))]),
        ("10", "img_08_4406743300_00699", [("10_yaozhed", (5, 5, 120, 60))]),
        ("10", "img_07_436163500_00093", [("10_yaozhe", (3, 3, 40, 50)), ("d", (60, 10, 70, 20))]),
        ("4", "img_02_425506300_00118", [("4_shuiban", (20, 20, 90, 50)), ("9_zhehen", (1, 1, 128, 64))]),
    ]
    for i, (folder, stem, objs) in enumerate(files):
        write_image(src / folder / f"{stem}.jpg", (size_wh[1], size_wh[0]), seed=i)
        _write(src / "lable" / f"{stem}.xml", voc_xml(f"{stem}.jpg", size_wh, objs, folder=folder, depth=1))
    write_image(src / "5" / "img_05_424799500_00001.jpg", (size_wh[1], size_wh[0]), seed=9)  # never labelled
    _write(src / "README.md", "# GC10-DET\n![defects](defects examples.png)\n")
    write_image(src / "defects examples.png", (40, 100), seed=10)
    return src, Expected(4, 6, {"punching_hole": 1, "inclusion": 1, "waist_folding": 2, "water_spot": 1,
                                "crease": 1}, findings=("class_dropped", "image_unannotated"),
                         outside=("README.md", "defects examples.png"), detected="voc")


def build_pku_market_pcb(root: Path) -> tuple[Path, Expected]:
    """PCB_DATASET: Annotations/<Class>/*.xml + images/<Class>/*.jpg, with PCB_USED/ and rotation/."""
    src = root / "PCB_DATASET"
    size_wh = (150, 100)
    files = [
        ("Missing_hole", "01_missing_hole_01", [("missing_hole", (20, 30, 35, 44)), ("missing_hole", (90, 60, 104, 75))]),
        ("Short", "04_short_02", [("short", (40, 40, 52, 55))]),
        ("Spurious_copper", "12_spurious_copper_05", [("spurious_copper", (100, 10, 120, 25))]),
    ]
    for i, (cls, stem, objs) in enumerate(files):
        write_image(src / "images" / cls / f"{stem}.jpg", (size_wh[1], size_wh[0]), seed=i)
        _write(src / "Annotations" / cls / f"{stem}.xml", voc_xml(f"{stem}.jpg", size_wh, objs, folder=cls))
    write_image(src / "PCB_USED" / "01.JPG", (size_wh[1], size_wh[0]), seed=7)
    write_image(src / "rotation" / "Missing_hole_rotation" / "01_missing_hole_01.jpg", (size_wh[0], size_wh[1]), seed=8)
    return src, Expected(3, 4, {"missing_hole": 2, "short": 1, "spurious_copper": 1}, detected="voc")


def build_deeppcb(root: Path) -> tuple[Path, Expected]:
    """PCBData: group*/<n>/<id>_test.jpg + _temp.jpg, group*/<n>_not/<id>.txt, trainval.txt / test.txt;
    inside a clone of the repository (DeepPCB/README.md, DeepPCB/fig/). The lists name ``<id>.jpg``,
    a file that does not exist (the tested image is ``<id>_test.jpg``)."""
    _write(root / "DeepPCB" / "README.md", "# DeepPCB\nYou can only use this dataset for research purpose.\n")
    write_image(root / "DeepPCB" / "fig" / "test.jpg", (32, 32), seed=20)
    src = root / "DeepPCB" / "PCBData"
    size = (64, 64)  # real images are 640x640
    samples = [
        ("group00041", "00041", "00041000", "train", ["4 5 20 18 1", "30 30 45 41 3", "50 2 62 12 6"]),
        ("group00041", "00041", "00041001", "train", ["10 10 22 30 2"]),
        ("group12000", "12000", "12000318", "test", ["1 1 64 64 5", "33 40 40 47 4"]),
    ]
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for i, (group, n, ident, split, lines) in enumerate(samples):
        write_image(src / group / n / f"{ident}_test.jpg", size, seed=i)
        write_image(src / group / n / f"{ident}_temp.jpg", size, seed=10 + i)
        _write(src / group / f"{n}_not" / f"{ident}.txt", "\n".join(lines) + "\n")
        lists[split].append(f"{group}/{n}/{ident}.jpg {group}/{n}_not/{ident}.txt")
    _write(src / "trainval.txt", "\n".join(lists["train"]) + "\n")
    _write(src / "test.txt", "\n".join(lists["test"]) + "\n")
    return src, Expected(3, 6, {"open": 1, "short": 1, "mousebite": 1, "spur": 1, "copper": 1, "pin-hole": 1},
                         {"train": 2, "test": 1})


def build_mvtec_ad(root: Path) -> tuple[Path, Expected]:
    """One MVTec AD category: train/good, test/good, test/<defect> and ground_truth/<defect>/NNN_mask.png;
    the archive's license.txt and readme.txt lie beside the category folders."""
    _write(root / "mvtec_anomaly_detection" / "license.txt", "CC BY-NC-SA 4.0\n")
    _write(root / "mvtec_anomaly_detection" / "readme.txt", "MVTec AD\n")
    src = root / "mvtec_anomaly_detection" / "bottle"
    size = (64, 64)  # real images are 700-1024 px square
    write_image(src / "train" / "good" / "000.png", size, seed=1)
    write_image(src / "train" / "good" / "001.png", size, seed=2)
    write_image(src / "test" / "good" / "000.png", size, seed=3)
    write_image(src / "test" / "broken_large" / "000.png", size, seed=4)
    _write_mask(src / "ground_truth" / "broken_large" / "000_mask.png", size, [(5, 5, 20, 15), (40, 40, 60, 62)])
    write_image(src / "test" / "contamination" / "000.png", size, seed=5)
    _write_mask(src / "ground_truth" / "contamination" / "000_mask.png", size, [(10, 30, 30, 50)])
    return src, Expected(5, 3, {"broken_large": 2, "contamination": 1}, {"train": 2, "test": 3})


def build_magnetic_tile(root: Path) -> tuple[Path, Expected]:
    """MT_<Class>/Imgs/<stem>.jpg with its mask <stem>.png beside it; MT_Free masks are empty; the
    repository's README.md and illustration (dataset.jpg, dataset.png) beside the MT_* folders."""
    src = root / "Magnetic-tile-defect-datasets."
    tiles = [
        ("MT_Blowhole", "exp1_num_4727", (60, 80), [(10, 10, 16, 17)]),
        ("MT_Crack", "exp3_num_171", (90, 50), [(5, 40, 45, 44), (30, 60, 34, 85)]),
        ("MT_Uneven", "exp6_num_53280", (70, 70), [(0, 0, 70, 30)]),
        ("MT_Free", "exp1_num_1002", (64, 64), []),
    ]
    for i, (cls, stem, size, rects) in enumerate(tiles):
        write_image(src / cls / "Imgs" / f"{stem}.jpg", size, seed=i)
        _write_mask(src / cls / "Imgs" / f"{stem}.png", size, rects)
    _write(src / "README.md", "# Magnetic-tile-defect-datasets\n![](dataset.jpg)\n")
    write_image(src / "dataset.jpg", (90, 160), seed=7)
    write_image(src / "dataset.png", (90, 160), seed=8)
    return src, Expected(4, 4, {"blowhole": 1, "crack": 2, "uneven": 1},
                         outside=("README.md", "dataset.jpg", "dataset.png"))


def _rle(mask: np.ndarray) -> str:
    """Kaggle EncodedPixels of a bool mask: 1-based ``start length`` runs in column-major order."""
    flat = np.concatenate([[0], mask.flatten(order="F").astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2] + 1, edges[1::2] + 1
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends, strict=True))


def build_severstal(root: Path) -> tuple[Path, Expected]:
    """train.csv (ImageId,ClassId,EncodedPixels) + train_images/; unlisted images are defect-free;
    sample_submission.csv (ImageId,EncodedPixels,ClassId) and test_images/ beside them."""
    src = root / "severstal-steel-defect-detection"
    size = (256, 1600)
    m1 = np.zeros(size, dtype=bool)
    m1[10:40, 100:180] = True
    m1[200:250, 900:1000] = True  # a second blob of the same row: two objects
    m3 = np.zeros(size, dtype=bool)
    m3[0:256, 1500:1520] = True
    m4 = np.zeros(size, dtype=bool)
    m4[100:120, 0:30] = True
    rows = [("0002cc93b.jpg", 1, m1), ("0002cc93b.jpg", 3, m3), ("000f6bf48.jpg", 4, m4)]
    _write(src / "train.csv", "ImageId,ClassId,EncodedPixels\n" + "".join(f"{i},{c},{_rle(m)}\n" for i, c, m in rows))
    for k, name in enumerate(("0002cc93b.jpg", "000f6bf48.jpg", "0007a71bf.jpg")):
        write_image(src / "train_images" / name, size, seed=k)
    write_image(src / "test_images" / "004f40c73.jpg", size, seed=5)  # unlabelled test image: not read
    _write(src / "sample_submission.csv", "ImageId,EncodedPixels,ClassId\n004f40c73.jpg,1 1,0\n")
    return src, Expected(3, 4, {"defect_1": 2, "defect_3": 1, "defect_4": 1}, outside=("sample_submission.csv",),
                         detected="rle-csv")


def build_railsem19(root: Path) -> tuple[Path, Expected]:
    """rs19_val/jsons/rs19_val/*.json beside rs19_val/jpgs/rs19_val/*.jpg (the archive nests rs19_val
    again), uint8/rs19_val/*.png label maps and rs19-config.json; rails are polyline pairs."""
    src = root / "rs19_val"
    size_hw = (54, 96)  # real frames are 1920x1080
    frames = {
        "rs00000": [
            {"label": "track-signal-front", "boundingbox": [10, 5, 20, 25]},
            {"label": "pole", "polygon": [[40, 0], [44, 0], [44, 50], [40, 50]]},
            {"label": "rail", "polyline-pair": [[[30, 54], [45, 20]], [[60, 54], [50, 20]]]},
        ],
        "rs00001": [
            {"label": "buffer-stop", "boundingbox": [30, 20, 70, 45]},
            {"label": "guard-rail", "polyline": [[0, 50], [40, 30]]},
        ],
    }
    for k, (frame, objects) in enumerate(frames.items()):
        write_image(src / "jpgs" / "rs19_val" / f"{frame}.jpg", size_hw, seed=k)
        _write_mask(src / "uint8" / "rs19_val" / f"{frame}.png", size_hw, [])
        doc = {"frame": frame, "imgHeight": size_hw[0], "imgWidth": size_hw[1], "objects": objects}
        _write(src / "jsons" / "rs19_val" / f"{frame}.json", json.dumps(doc))
    _write(src / "rs19-config.json", json.dumps({"labels": [{"name": "road", "color": [128, 64, 128]}]}))
    return src, Expected(2, 3, {"track-signal-front": 1, "pole": 1, "buffer-stop": 1}, findings=("object_skipped",),
                         outside=("rs19-config.json",), detected="railsem19")


BUILDERS: dict[str, Callable[[Path], tuple[Path, Expected]]] = {
    "neu-det": build_neu_det,
    "gc10-det": build_gc10_det,
    "pku-market-pcb": build_pku_market_pcb,
    "deeppcb": build_deeppcb,
    "mvtec-ad": build_mvtec_ad,
    "magnetic-tile": build_magnetic_tile,
    "severstal": build_severstal,
    "railsem19": build_railsem19,
}
"""Recipe name -> fixture builder."""

PUBLISHED: dict[str, tuple[str, Callable[[Path], tuple[Path, Expected]]]] = {
    **{name: (name, build) for name, build in BUILDERS.items()},
    "neu-det-kaggle": ("neu-det", build_neu_det_kaggle),
}
"""Every published layout a recipe reads: layout name -> (recipe name, fixture builder)."""
