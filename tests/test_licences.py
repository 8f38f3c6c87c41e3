"""``edgevision licences``: the licence chain of a model (ONNX metadata, run folder), of this environment's runtime
install and of a wheelhouse (wheels built here, read without installing), the flags, exit codes, JSON, the CycloneDX
SBOM (validated against the bundled schema), the export record and the release gate's ``licence`` key."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from edgevision.core.errors import ConfigError, EdgeVisionError
from edgevision.licences import (
    COPYLEFT,
    EXIT_NOT_PERMISSIVE,
    EXIT_UNKNOWN,
    NETWORK,
    NON_COMMERCIAL,
    PERMISSIVE,
    UNKNOWN,
    WEAK,
    LicenceChain,
    classify,
    gate_facts,
    items_from_source,
    licence_chain,
    model_items,
    normalise,
    sbom_json,
    wheelhouse_items,
)
from edgevision.reliability.gate import Gate, judge_gate, load_gate
from tests.helpers import REPO, run_cli
from tests.runtime.conftest import bbox_model, make_meta, save_model

GPL_CLASSIFIER = "License :: OSI Approved :: GNU General Public License v3 (GPLv3)"
BSD_TEXT = ("Copyright (c) 2024, Someone\n\nRedistribution and use in source and binary forms, with or without "
            "modification, are permitted provided that the following conditions are met: ...\n")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private weights registry (the chain looks unregistered weights up in it); the CLI children inherit it."""
    monkeypatch.setenv("EDGEVISION_HOME", str(tmp_path / "home"))


# ---------------------------------------------------------------------------------------------- artefacts
def make_wheel(folder: Path, name: str, version: str, headers: list[tuple[str, str]] = (),
               licence_files: dict[str, str] | None = None) -> Path:
    """A real, minimal pure-Python wheel: ``NAME/__init__.py`` and ``NAME-VERSION.dist-info`` with METADATA, WHEEL,
    RECORD and optional ``licenses/`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    pkg = name.replace("-", "_")
    dist = f"{pkg}-{version}.dist-info"
    meta = f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n" + "".join(f"{k}: {v}\n" for k, v in headers)
    meta += "".join(f"License-File: {f}\n" for f in licence_files or {})
    entries = {f"{pkg}/__init__.py": "", f"{dist}/METADATA": meta,
               f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: edgevision-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
               **{f"{dist}/licenses/{f}": text for f, text in (licence_files or {}).items()}}
    path = folder / f"{pkg}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for arc, text in entries.items():
            z.writestr(arc, text)
        z.writestr(f"{dist}/RECORD", "".join(f"{arc},,\n" for arc in entries) + f"{dist}/RECORD,,\n")
    return path


def make_sdist(folder: Path, name: str, version: str, licence: str) -> Path:
    path = folder / f"{name}-{version}.tar.gz"
    data = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: {licence}\n".encode()
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo(f"{name}-{version}/PKG-INFO")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """MIT (License-Expression), GPL-3.0 (classifier), LGPL (License field), BSD (licence file only), an
    Apache-or-BSD expression, MPL-2.0 (an sdist), and a SHA256SUMS file that is not a wheel."""
    wh = tmp_path / "wheelhouse"
    make_wheel(wh, "mit-pkg", "1.0", [("License-Expression", "MIT")])
    make_wheel(wh, "gpl-pkg", "2.1", [("Classifier", "Programming Language :: Python :: 3"),
                                      ("Classifier", GPL_CLASSIFIER)])
    make_wheel(wh, "lgpl-pkg", "0.3", [("License", "LGPL-3.0-or-later")])
    make_wheel(wh, "bsd-pkg", "4.0", licence_files={"LICENSE": BSD_TEXT})
    make_wheel(wh, "dual-pkg", "26.0", [("License-Expression", "Apache-2.0 OR BSD-2-Clause")])
    make_sdist(wh, "mpl-pkg", "1.2", "MPL-2.0")
    (wh / "SHA256SUMS").write_text("not a wheel\n")
    return wh


def onnx_with_source(path: Path, source: dict[str, Any]) -> Path:
    """A real ONNX model (runs in onnxruntime) whose EdgeVision metadata carries ``source``."""
    meta = make_meta(["scratch"], size_hw=(64, 64))
    meta.source = source
    return bbox_model(path, meta)


AGPL_SOURCE = {"backend": "ultralytics", "arch": "yolov8n", "licence": "AGPL-3.0", "licences": [
    {"role": "code", "name": "ultralytics", "licence": "AGPL-3.0", "category": NETWORK, "source": "training backend"},
    {"role": "weights", "name": "yolov8n-coco", "licence": "AGPL-3.0", "category": NETWORK, "source": "model.json"},
    {"role": "dataset", "name": "neu-det", "licence": "academic research use", "category": NON_COMMERCIAL,
     "source": "recipe neu-det", "note": "research use only"},
]}
BSD_SOURCE = {"backend": "torchvision", "arch": "ssdlite320_mobilenet_v3_large", "licences": [
    {"role": "code", "name": "torchvision", "licence": "BSD-3-Clause", "category": PERMISSIVE},
    {"role": "weights", "name": "ssdlite320_mobilenet_v3_large", "licence": "none (trained from scratch)",
     "category": PERMISSIVE},
    {"role": "dataset", "name": "line-images", "licence": "CC-BY-4.0", "category": PERMISSIVE},
]}


def make_run(root: Path, backend: str, spec: dict[str, Any] | None, dataset: dict[str, Any] | None) -> Path:
    """A run folder as `edgevision train` lays it out (config.yaml, model.json, dataset.json), without weights."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"backend": backend, "model": "x", "epochs": 1}))
    if spec is not None:
        (root / "model.json").write_text(json.dumps(spec))
    if dataset is not None:
        (root / "dataset.json").write_text(json.dumps(dataset))
    return root


def by_name(chain: LicenceChain) -> dict[str, Any]:
    return {i.name: i for i in chain.items}


def one_line_error(res: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


# ---------------------------------------------------------------------------------------------- classification
@pytest.mark.parametrize(("text", "category"), [
    ("MIT", PERMISSIVE), ("MIT License", PERMISSIVE), ("Apache-2.0 OR BSD-2-Clause", PERMISSIVE),
    ("BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0", PERMISSIVE), ("PSF-2.0", PERMISSIVE),
    ("EPL-2.0 OR BSD-3-Clause", PERMISSIVE),  # paho-mqtt: the user may take the BSD-style EDL
    ("LGPL-3.0-or-later", WEAK), ("MPL-2.0", WEAK), ("GPL-3.0-only", COPYLEFT), ("MIT AND GPL-2.0-only", COPYLEFT),
    ("(MIT OR GPL-2.0-only) AND LGPL-3.0-only", WEAK), ("GPL-2.0-or-later WITH Classpath-exception-2.0", COPYLEFT),
    ("AGPL-3.0", NETWORK), ("AGPL-3.0 License (https://ultralytics.com/license)", NETWORK),
    ("CC-BY-NC-SA-4.0", NON_COMMERCIAL), ("academic research use", NON_COMMERCIAL), ("CC-BY-4.0", PERMISSIVE),
    ("Kaggle competition rules", NON_COMMERCIAL), ("unspecified", UNKNOWN), ("", UNKNOWN), (None, UNKNOWN),
    ("proprietary", UNKNOWN), ("Some Custom Licence v1", UNKNOWN),
])
def test_classify(text: str | None, category: str) -> None:
    assert classify(text) == category


def test_normalise_free_text() -> None:
    assert normalise("3-Clause BSD License") == "BSD-3-Clause"
    assert normalise("Apache 2.0") == "Apache-2.0" and normalise("FreeBSD") == "BSD-2-Clause"
    assert normalise("PSFL") == "PSF-2.0" and normalise("GPLv3+") == "GPL-3.0-or-later"
    assert normalise("  MIT   License ") == "MIT" and normalise("Apache-2.0 OR MIT") == "Apache-2.0 OR MIT"


# ---------------------------------------------------------------------------------------------- wheelhouse
def test_wheelhouse_is_read_from_the_archives(wheelhouse: Path) -> None:
    items = {i.name: i for i in wheelhouse_items(wheelhouse)}
    assert set(items) == {"mit-pkg", "gpl-pkg", "lgpl-pkg", "bsd-pkg", "dual-pkg", "mpl-pkg"}
    got = {n: (i.version, i.licence, i.category, i.source) for n, i in items.items()}
    assert got["mit-pkg"] == ("1.0", "MIT", PERMISSIVE, "License-Expression")
    assert got["gpl-pkg"] == ("2.1", "GPL-3.0-only", COPYLEFT, "classifier")
    assert got["lgpl-pkg"] == ("0.3", "LGPL-3.0-or-later", WEAK, "License field")
    assert got["bsd-pkg"] == ("4.0", "BSD", PERMISSIVE, "licence file LICENSE")
    assert got["dual-pkg"][1:3] == ("Apache-2.0 OR BSD-2-Clause", PERMISSIVE)
    assert got["mpl-pkg"][:3] == ("1.2", "MPL-2.0", WEAK) and "source archive" in items["mpl-pkg"].note
    assert "LGPL: used unmodified as a separate library" in items["lgpl-pkg"].meaning()
    assert items["mpl-pkg"].meaning().startswith("MPL: file-level copyleft")
    assert items["gpl-pkg"].meaning().startswith("GPL:") and items["mit-pkg"].meaning() == ""


def test_cli_on_a_wheelhouse_flags_copyleft_and_sets_exit_codes(wheelhouse: Path, tmp_path: Path) -> None:
    out = tmp_path / "chain.json"
    r = run_cli("licences", "--deploy", wheelhouse, "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr  # a report: 0 without --permissive-only
    assert "gpl-pkg" in r.stdout and "GPL: distributing a product" in r.stdout and "not-permissive" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["schema"] == "edgevision.licences/1" and doc["verdict"] == "not-permissive" and not doc["permissive"]
    assert doc["subject"] == {"model": None, "kind": None, "deploy": str(wheelhouse), "extras": []}
    assert [(f["name"], f["category"]) for f in doc["flags"]] == [("gpl-pkg", COPYLEFT), ("lgpl-pkg", WEAK),
                                                                  ("mpl-pkg", WEAK)]
    assert all(f["meaning"] for f in doc["flags"])
    mit = next(i for i in doc["items"] if i["name"] == "mit-pkg")
    assert (mit["role"], mit["licence"], mit["category"], mit["accepted"]) == ("dependency", "MIT", PERMISSIVE, False)

    r = run_cli("licences", "--deploy", wheelhouse, "--permissive-only")
    assert r.returncode == EXIT_NOT_PERMISSIVE == 3, r.stdout + r.stderr
    r = run_cli("licences", "--deploy", wheelhouse, "--permissive-only", "--accept", "gpl-pkg",
                "--accept", "lgpl_pkg,", "--accept", "mpl-pkg", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "permissive" and "accepted after review: gpl-pkg, lgpl-pkg, mpl-pkg" in doc["summary"]

    unknown = tmp_path / "unknown-wh"
    make_wheel(unknown, "mit-pkg", "1.0", [("License-Expression", "MIT")])
    make_wheel(unknown, "mystery", "0.1")  # declares nothing
    r = run_cli("licences", "--deploy", unknown, "--permissive-only")
    assert r.returncode == EXIT_UNKNOWN == 4, r.stdout + r.stderr
    assert "licence not known: find it out before shipping" in r.stdout


def test_sbom_of_model_and_wheelhouse_validates_against_the_cyclonedx_schema(wheelhouse: Path, tmp_path: Path) -> None:
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    model = onnx_with_source(tmp_path / "m.onnx", AGPL_SOURCE)
    sbom = tmp_path / "out" / "sbom.cdx.json"
    r = run_cli("licences", model, "--deploy", wheelhouse, "--sbom", sbom, block_network=tmp_path / "net")
    assert r.returncode == 0, r.stdout + r.stderr
    text = sbom.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    # the validator needs no network: its schemas are bundled (checked with sockets blocked)
    code = ("import sys; from cyclonedx.schema import SchemaVersion; from cyclonedx.validation.json import "
            "JsonStrictValidator; e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read()); "
            "print('valid' if e is None else e)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "net"), EDGEVISION_TEST_NETLOG=str(tmp_path / "net" / "netlog.txt"))
    res = subprocess.run([sys.executable, "-c", code, str(sbom)], capture_output=True, text=True, env=env, timeout=120)
    assert res.stdout.strip() == "valid", res.stdout + res.stderr
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert doc["metadata"]["component"]["name"] == "m.onnx"
    assert doc["metadata"]["component"]["type"] == "machine-learning-model"
    comps = {c["name"]: c for c in doc["components"]}
    assert set(comps) == {"ultralytics", "yolov8n-coco", "neu-det", "mit-pkg", "gpl-pkg", "lgpl-pkg", "bsd-pkg",
                          "dual-pkg", "mpl-pkg"}
    assert comps["mit-pkg"]["licenses"] == [{"license": {"id": "MIT"}}]
    assert comps["gpl-pkg"]["licenses"] == [{"license": {"id": "GPL-3.0-only"}}]
    assert comps["mit-pkg"]["purl"] == "pkg:pypi/mit-pkg@1.0" and comps["mit-pkg"]["type"] == "library"
    assert comps["dual-pkg"]["licenses"] == [{"expression": "Apache-2.0 OR BSD-2-Clause"}]
    assert comps["bsd-pkg"]["licenses"] == [{"license": {"name": "BSD"}}]
    assert comps["neu-det"]["type"] == "data" and comps["yolov8n-coco"]["type"] == "machine-learning-model"
    assert "AGPL-3.0" in json.dumps(comps["ultralytics"]["licenses"]) and comps["ultralytics"]["type"] == "framework"
    props = {p["name"]: p["value"] for p in comps["gpl-pkg"]["properties"]}
    assert props == {"edgevision:role": "dependency", "edgevision:licence-category": COPYLEFT}
    assert {d["ref"] for d in doc["dependencies"]} >= {"model"}
    assert not (tmp_path / "net" / "netlog.txt").exists(), "the command touched the network"
    # a wheelhouse alone: its wheels are the components, no subject
    alone = json.loads(sbom_json(licence_chain(deploy=wheelhouse)))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(alone)) is None
    assert "component" not in alone["metadata"] and len(alone["components"]) == 6
    assert alone["metadata"]["tools"]["components"][0]["name"] == "edgevision"


def test_sbom_without_cyclonedx_prints_the_chain_and_one_line_how_to_get_it(wheelhouse: Path, tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['cyclonedx'] = None\n")  # as if not installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")]), COLUMNS="200",
               NO_COLOR="1", TERM="dumb")
    sbom = tmp_path / "sbom.json"
    r = subprocess.run([sys.executable, "-m", "edgevision", "licences", "--deploy", str(wheelhouse), "--sbom",
                        str(sbom)], capture_output=True, text=True, env=env, timeout=120)
    assert "gpl-pkg" in r.stdout and "verdict" in r.stdout  # the chain is there
    one_line_error(r, f"--sbom {sbom}", "pip install 'edgevision[licences]'")
    assert not sbom.exists()


# ---------------------------------------------------------------------------------------------- models
def test_onnx_model_chain_and_this_environments_runtime(tmp_path: Path) -> None:
    model = onnx_with_source(tmp_path / "agpl.onnx", AGPL_SOURCE)
    chain = licence_chain(model)
    items = by_name(chain)
    assert [i.role for i in chain.items[:3]] == ["code", "weights", "dataset"]
    assert (items["ultralytics"].category, items["yolov8n-coco"].licence, items["neu-det"].category) == \
        (NETWORK, "AGPL-3.0", NON_COMMERCIAL)
    assert items["ultralytics"].meaning().startswith("AGPL:")
    assert items["neu-det"].meaning().startswith("not licensed for commercial use")
    # the runtime closure as installed here: edgevision itself, its base requirements and onnxruntime's
    deps = [i for i in chain.items if i.role == "dependency"]
    assert deps[0].name == "edgevision" and deps[0].licence == "Apache-2.0" and deps[0].category == PERMISSIVE
    names = {i.name.lower() for i in deps}
    assert {"numpy", "onnxruntime", "opencv-python-headless", "pydantic", "pyyaml"} <= names
    assert "torch" not in names and "ultralytics" not in names and "fastapi" not in names
    assert all(i.version for i in deps) and chain.subject["extras"][0].startswith("onnxruntime")
    np_item = next(i for i in deps if i.name.lower() == "numpy")
    assert np_item.category == PERMISSIVE and np_item.source == "License-Expression"
    assert "FFmpeg (LGPL-2.1)" in next(i for i in deps if i.name.lower() == "opencv-python-headless").note
    assert chain.verdict == "not-permissive" and chain.exit_code(True) == EXIT_NOT_PERMISSIVE
    assert chain.exit_code(False) == 0
    with_serve = licence_chain(model, extras=["serve"])
    assert {"fastapi", "uvicorn"} <= {i.name.lower() for i in with_serve.items}


def test_cli_on_agpl_and_bsd_models(tmp_path: Path) -> None:
    agpl = onnx_with_source(tmp_path / "agpl.onnx", AGPL_SOURCE)
    bsd = onnx_with_source(tmp_path / "bsd.onnx", BSD_SOURCE)
    out = tmp_path / "agpl.json"
    r = run_cli("licences", agpl, "--permissive-only", "--json", out)
    assert r.returncode == EXIT_NOT_PERMISSIVE, r.stdout + r.stderr
    assert "AGPL: distributing it, or letting others use it over a network" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["subject"]["kind"] == "onnx"
    flagged = {f["name"]: f["category"] for f in doc["flags"]}
    assert flagged["ultralytics"] == NETWORK and flagged["yolov8n-coco"] == NETWORK and flagged["neu-det"] == NON_COMMERCIAL
    r = run_cli("licences", bsd, "--permissive-only", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "permissive" and doc["flags"] == []


def test_older_and_foreign_metadata_say_what_is_not_recorded() -> None:
    old = items_from_source({"backend": "ultralytics", "arch": "yolov8n", "dataset_hash": "ab" * 32,
                             "licence": "AGPL-3.0 (Ultralytics architecture, no weights)"})
    assert [(i.role, i.licence, i.category) for i in old] == [
        ("code", "AGPL-3.0", NETWORK), ("weights", "none (trained from scratch)", PERMISSIVE),
        ("dataset", "unknown (not recorded)", UNKNOWN)]
    assert "abababababab" in old[2].note
    registered = items_from_source({"backend": "torchvision", "licence": "Apache-2.0", "registered": "ssd-coco"})
    assert (registered[0].licence, registered[1].name, registered[1].category) == ("BSD-3-Clause", "ssd-coco", PERMISSIVE)
    foreign = items_from_source({"origin": "foreign", "backend": "ultralytics",
                                 "licence": "AGPL-3.0 License (https://ultralytics.com/license)"})
    assert foreign[0].category == NETWORK and foreign[0].source == "the file's Ultralytics metadata"
    assert [i.licence for i in foreign[1:]] == ["unknown (not recorded)"] * 2
    nothing = items_from_source({})
    assert all(i.category == UNKNOWN for i in nothing)


def test_run_folder_chain_reads_model_dataset_recipe_and_registry(tmp_path: Path) -> None:
    tv = make_run(tmp_path / "tv", "torchvision",
                  {"source": "ssdlite320_mobilenet_v3_large", "kind": "arch", "arch": "ssdlite320_mobilenet_v3_large",
                   "licence": "BSD-3-Clause (architecture, no weights)"},
                  {"hash": "x", "source": "/data/neu", "recipe": "neu-det", "licence": "academic research use"})
    items, kind = model_items(tv)
    assert kind == "run"
    assert [(i.name, i.licence, i.category) for i in items] == [
        ("torchvision", "BSD-3-Clause", PERMISSIVE),
        ("ssdlite320_mobilenet_v3_large", "none (trained from scratch)", PERMISSIVE),
        ("neu-det", "academic research use", NON_COMMERCIAL)]
    assert items[2].source == "recipe neu-det" and items[2].note.startswith("research use only")

    # weights that were unregistered when trained, registered since: the registry's licence is taken
    from edgevision.train.weights import add_weights

    ckpt = tmp_path / "yolov8n.pt"
    ckpt.write_bytes(b"PK\x03\x04" + bytes(range(200)))
    entry = add_weights(ckpt, "yolov8n-coco", "AGPL-3.0", origin="https://example.invalid/yolov8n.pt")
    ul = make_run(tmp_path / "ul", "ultralytics",
                  {"source": str(ckpt), "kind": "weights", "path": str(ckpt), "sha256": entry.sha256,
                   "licence": "unknown (unregistered local file)", "origin": f"local file {ckpt}"},
                  {"hash": "y", "source": "/data/own line images", "recipe": None, "licence": None})
    (ul / "weights").mkdir()
    (ul / "weights" / "best.pt").write_bytes(b"PK\x03\x04")
    items, _ = model_items(ul / "weights" / "best.pt")  # a checkpoint inside a run means its run
    assert [(i.name, i.licence, i.category) for i in items] == [
        ("ultralytics", "AGPL-3.0", NETWORK), ("yolov8n-coco", "AGPL-3.0", NETWORK),
        ("own line images", "unknown (not recorded)", UNKNOWN)]
    assert items[1].source == "weights registry (yolov8n-coco)" and "local file" in items[1].note
    assert "--accept dataset" in items[2].note

    chain = LicenceChain(items[:1] + items[2:]).accept(["code"])
    assert chain.verdict == "unknown" and chain.exit_code(True) == EXIT_UNKNOWN
    assert chain.accept(["dataset"]).verdict == "permissive"
    bare = make_run(tmp_path / "bare", "ultralytics", None, None)
    assert [i.licence for i in model_items(bare)[0][1:]] == ["unknown (not recorded)"] * 2


def test_one_line_errors(tmp_path: Path, wheelhouse: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    note = tmp_path / "notes.txt"
    note.write_text("x")
    plain = bbox_model(tmp_path / "plain.onnx", make_meta(["a"]))
    from onnx import TensorProto, helper

    bare = save_model(tmp_path / "bare.onnx", [helper.make_node("Identity", ["images"], ["y"])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 640, 640])], None)
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases = [
        ((), "give a model (an exported .onnx or a run folder), a wheelhouse (--deploy DIR), or both"),
        (("--deploy", tmp_path / "nowhere"), "not a folder"),
        (("--deploy", empty), "no wheels (*.whl)"),
        (("--deploy", bad), "broken-1.0-py3-none-any.whl: not a readable wheel"),
        ((tmp_path / "missing.onnx",), "missing.onnx: not found"),
        ((note,), "notes.txt: expected an exported .onnx or a run folder"),
        ((bare,), "bare.onnx: no EdgeVision or Ultralytics metadata"),
        ((tmp_path / "empty.onnx",), "empty.onnx: not a readable ONNX file"),
        ((empty,), "not a run folder"),
        (("--deploy", wheelhouse, "--extra", "serve"), "drop --extra"),
        ((plain, "--extra", "serv"), "unknown --extra 'serv'"),
        (("--deploy", wheelhouse, "--accept", "gpl-pgk"), "Did you mean 'gpl-pkg'?"),
        (("--deploy", wheelhouse, "--json", tmp_path / "a.json", "--sbom", tmp_path / "a.json"), "same file"),
    ]
    for args, fragment in cases:
        one_line_error(run_cli("licences", *args), fragment)
    with pytest.raises(ConfigError, match="checkpoint outside a run folder"):
        ckpt = tmp_path / "loose.pt"
        ckpt.write_bytes(b"PK")
        model_items(ckpt)


def test_library_import_stays_light(wheelhouse: Path) -> None:
    code = ("import sys\nfrom edgevision.licences import licence_chain\n"
            f"licence_chain(deploy={str(wheelhouse)!r})\n"
            "print(sorted(m for m in ('onnxruntime', 'torch', 'cyclonedx', 'onnx', 'cv2') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]", res.stdout


# ---------------------------------------------------------------------------------------------- export record
def test_export_records_the_chain_in_the_metadata_and_the_runtime_keeps_it(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgevision.export.api import _metadata
    from edgevision.export.source import ModelSource
    from edgevision.runtime import Detector
    from edgevision.runtime.metadata import METADATA_KEY, SCHEMA, ModelMetadata
    from edgevision.runtime.props import metadata_props, with_metadata
    from edgevision.train.run import RunPaths

    run = make_run(tmp_path / "run", "ultralytics",
                   {"source": "yolov8n", "kind": "arch", "arch": "yolov8n.yaml",
                    "licence": "AGPL-3.0 (Ultralytics architecture, no weights)"},
                   {"hash": "h", "source": "/d", "recipe": "mvtec-ad", "licence": "CC-BY-NC-SA-4.0"})
    (run / "weights").mkdir()
    (run / "weights" / "best.pt").write_bytes(b"PK\x03\x04weights")
    src = ModelSource(weights=run / "weights" / "best.pt", backend="ultralytics", run=RunPaths(run))
    record = src.licences()
    assert [(r["role"], r["name"], r["licence"], r["category"]) for r in record] == [
        ("code", "ultralytics", "AGPL-3.0", NETWORK), ("weights", "yolov8n.yaml", "none (trained from scratch)", PERMISSIVE),
        ("dataset", "mvtec-ad", "CC-BY-NC-SA-4.0", NON_COMMERCIAL)]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    raw = SimpleNamespace(names=["a"], imgsz=64, input={}, stride=32, arch="yolov8n", imgsz_trained=64)
    meta = _metadata(raw, src, model, "yolo-raw", 300, False, False)  # what export_model writes
    assert meta.schema == SCHEMA == "edgevision.model/1"  # additive: the major version is unchanged
    assert meta.source["licences"] == record and meta.source["backend"] == "ultralytics"
    assert [i.category for i in items_from_source(ModelMetadata.from_json(meta.to_json()).source)] == \
        [NETWORK, PERMISSIVE, NON_COMMERCIAL]

    # a reader ignores what it does not know: a future top-level field and the licences block
    path = bbox_model(tmp_path / "m.onnx", make_meta(["scratch"], size_hw=(64, 64)))
    doc = json.loads(metadata_props(path.read_bytes())[METADATA_KEY])
    doc["source"] = {"licences": record}
    doc["some_future_field"] = {"x": 1}
    path.write_bytes(with_metadata(path.read_bytes(), {METADATA_KEY: json.dumps(doc)}))
    img = np.zeros((64, 64, 3), np.uint8)
    img[10:30, 20:40] = 255
    det = Detector(path)
    assert len(det(img)) == 1 and det.metadata.source["licences"] == record


# ---------------------------------------------------------------------------------------------- the release gate
def test_gate_licence_key_fails_agpl_and_passes_bsd(tmp_path: Path) -> None:
    from edgevision.runtime import read_metadata

    gate_file = tmp_path / "closed.yaml"
    gate_file.write_text("licence: {permissive_only: true}\n")
    gate = load_gate(gate_file)
    assert gate.licence is not None and gate.licence.permissive_only and gate.licence.accept == []
    agpl = read_metadata(onnx_with_source(tmp_path / "agpl.onnx", AGPL_SOURCE)).source
    bsd = read_metadata(onnx_with_source(tmp_path / "bsd.onnx", BSD_SOURCE)).source
    [fail] = judge_gate(gate, {"licence": gate_facts(agpl)})
    assert (fail.key, fail.limit, fail.value, fail.passed) == ("licence", True, False, False)
    assert "ultralytics (training code) AGPL-3.0 [network-copyleft]" in fail.detail
    assert "neu-det (dataset) academic research use [non-commercial]" in fail.detail
    [ok] = judge_gate(gate, {"licence": gate_facts(bsd)})
    assert ok.passed and ok.detail.endswith("permissive")
    # unknown is not permissive; a reviewed item can be accepted
    own = {"licences": [{**d, **({"licence": "unknown (not recorded)", "category": UNKNOWN}
                                 if d["role"] == "dataset" else {})} for d in BSD_SOURCE["licences"]]}
    [unknown] = judge_gate(gate, {"licence": gate_facts(own)})
    assert not unknown.passed and "unknown:" in unknown.detail
    accepting = Gate.model_validate({"name": "g", "licence": {"permissive_only": True, "accept": ["dataset", "nosuch"]}})
    assert judge_gate(accepting, {"licence": gate_facts(own)})[0].passed
    assert not judge_gate(gate, {})[0].passed  # not measured fails
    assert judge_gate(Gate.model_validate({"name": "g", "licence": {"permissive_only": False}}), {}) == []
    typo = tmp_path / "typo.yaml"
    typo.write_text("licence: {permisive_only: true}\n")
    with pytest.raises(EdgeVisionError, match=r"unknown gate key 'licence.permisive_only' \(did you mean "
                                              r"'licence.permissive_only'\?\)"):
        load_gate(typo)
    # the shipped gates still load (the example documents the key in a comment)
    assert load_gate(REPO / "configs" / "gate" / "line-example.yaml").licence is None


@pytest.mark.slow
def test_reliability_run_judges_the_licence_key(tmp_path: Path) -> None:
    """The real command: the gate's licence check on two real models, exit 1 with a junit failure / exit 0."""
    from xml.etree import ElementTree as ET

    from tests.bench.test_bench import _dataset

    data = _dataset(tmp_path / "data", n=8)
    gate_file = tmp_path / "closed.yaml"
    gate_file.write_text("licence: {permissive_only: true}\n")
    args = ("--data", data, "--gate", gate_file, "--suite", "bad-input", "--latency-samples", "662")
    agpl = onnx_with_source(tmp_path / "agpl.onnx", AGPL_SOURCE)
    r = run_cli("reliability", agpl, "--out", tmp_path / "a", *args)
    assert r.returncode == 1, r.stdout + r.stderr
    suite = ET.parse(tmp_path / "a" / "junit.xml").getroot().find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == ["licence"]
    doc = json.loads((tmp_path / "a" / "reliability.json").read_text())
    assert doc["gate"]["licence"] == {"permissive_only": True, "accept": []}
    assert doc["gate"]["facts"]["licence"]["verdict"] == "not-permissive"
    bsd = onnx_with_source(tmp_path / "bsd.onnx", BSD_SOURCE)
    r = run_cli("reliability", bsd, "--out", tmp_path / "b", *args)
    assert r.returncode == 0, r.stdout + r.stderr
