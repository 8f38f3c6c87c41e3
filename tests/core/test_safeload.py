"""The bounded loaders of `edgevision.core.safeload` and the message helpers of `edgevision.core.errors`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgevision.core.errors import ConfigError, DatasetError, UnknownNameError, short_repr, short_text
from edgevision.core.safeload import (
    MAX_IMAGE_PIXELS,
    MAX_JSON_DEPTH,
    MAX_YAML_BYTES,
    check_image_size,
    image_size,
    json_depth,
    load_json,
    load_yaml,
    loads_json,
    loads_yaml,
)
from tests.formats.test_hostile_input import alias_bomb, png_header


# -- JSON --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('{"a": "[[[[{{{"}', 1), ('["\\"[[[", "]]]"]', 1),
    ('["\\\\", [[]]]', 3), ('["\\u005b", []]', 2), ('{"a": "]]]]"} ', 1),
])
def test_json_depth_ignores_brackets_in_strings(text: str, depth: int) -> None:
    assert json_depth(text.encode()) == depth
    json.loads(text)  # the cases are valid JSON


def test_json_deeper_than_the_bound_is_refused_before_parsing() -> None:
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_json(ok, "x.json") is not None
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match=r"x\.json: lists/objects nested 100000 levels deep") as e:
        loads_json("[" * 100_000 + "]" * 100_000, "x.json")
    assert e.value.code == "json_malformed" and time.perf_counter() - t0 < 1


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"id": ' + "9" * 5000 + "}", "5,000 digits"),
    ('{"a": [1, 2,', "malformed JSON at line 1"),
    (b'{"a": "\xff"}', "not UTF-8"),
])
def test_json_problems_are_one_line_dataset_errors(text: str | bytes, fragment: str) -> None:
    with pytest.raises(DatasetError) as e:
        loads_json(text, "f.json")
    assert fragment in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("f.json: ")


def test_load_json_missing_file_and_bom(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found") as e:
        load_json(tmp_path / "nope.json")
    assert e.value.code == "file_missing"
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert load_json(tmp_path / "bom.json") == {"a": 1}


# -- YAML --------------------------------------------------------------------------------------
def test_alias_bomb_is_refused_in_well_under_a_second() -> None:
    bomb = alias_bomb()
    assert len(bomb) < 400
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb") as e:
        loads_yaml(bomb, "data.yaml")
    assert time.perf_counter() - t0 < 0.5
    assert len(str(e.value)) < 200 and "\n" not in str(e.value)


@pytest.mark.parametrize(("text", "fragment"), [
    (alias_bomb(levels=10), "alias bomb"),
    ("a: &a [*a]\n", "recursive alias"),
    ("a: &a {b: *a}\n", "recursive alias"),
    ("a: " + "[" * 100_000, "nested more than 50 levels"),
    ("a: " + "{b: " * 60 + "1" + "}" * 60, "nested more than 50 levels"),
    ("x: &x 1\n" + "".join(f"k{i}: *x\n" for i in range(1001)), "more than 1000 aliases"),
    ("a: " + "9" * 5000, "value not readable"),
    ("a: 2024-13-45", "value not readable"),
    ("a: [1, 2", "malformed YAML at line"),
])
def test_unbounded_yaml_is_a_one_line_config_error(text: str, fragment: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        loads_yaml(text, "c.yaml")
    assert fragment in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 300, str(e.value)
    assert time.perf_counter() - t0 < 2


def test_yaml_keeps_safe_load_semantics() -> None:
    import yaml

    text = "base: &b {lr: 0.01, epochs: 3}\nrun: {<<: *b, epochs: 5}\nnames: [a, yes, 3]\nwhen: 2024-01-02\n"
    assert loads_yaml(text, "c.yaml") == yaml.safe_load(text)
    assert loads_yaml("", "c.yaml") is None
    with pytest.raises(ConfigError, match="malformed YAML"):
        loads_yaml("!!python/object:os.system {}", "c.yaml")  # safe: no arbitrary objects


def test_yaml_file_size_cap_encoding_and_dataset_errors(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_YAML_BYTES)
    with pytest.raises(ConfigError, match="at most"):
        load_yaml(big, "config")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\n")
    with pytest.raises(DatasetError, match="not UTF-8") as e:
        load_yaml(bad, "dataset yaml", dataset=True)
    assert e.value.code == "yaml_malformed"
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_yaml(tmp_path / "nope.yaml", "recipe")


@pytest.mark.parametrize("loader", ["config", "gate", "remap", "recipe", "train"])
def test_every_yaml_the_tool_reads_is_bounded(tmp_path: Path, loader: str) -> None:
    from edgevision.config import read_yaml_mapping
    from edgevision.data.remap import load_remap_config
    from edgevision.recipes import get_recipe
    from edgevision.reliability.gate import load_gate
    from edgevision.train.config import resolve_train_config

    f = tmp_path / "bomb.yaml"
    f.write_text(alias_bomb())
    call = {"config": lambda: read_yaml_mapping(f, "config"), "gate": lambda: load_gate(f),
            "remap": lambda: load_remap_config(f), "recipe": lambda: get_recipe(str(f)),
            "train": lambda: resolve_train_config(f, {})}[loader]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb"):
        call()
    assert time.perf_counter() - t0 < 1


def test_no_unbounded_yaml_loads_left_in_the_package() -> None:
    """Every YAML goes through `edgevision.core.safeload`; `yaml.safe_load` / `yaml.load` nowhere else."""
    pkg = Path(__file__).resolve().parents[2] / "edgevision"
    offenders = sorted(str(p.relative_to(pkg.parent)) for p in pkg.rglob("*.py")
                       if p.name != "safeload.py" and ("yaml.safe_load(" in p.read_text() or "yaml.load(" in p.read_text()))
    assert offenders == [], offenders


# -- image headers -----------------------------------------------------------------------------
def test_image_size_reads_the_header_within_the_bound(tmp_path: Path) -> None:
    assert image_size(png_header(64, 48), "x") == (48, 64)
    (tmp_path / "a.png").write_bytes(png_header(10_000, 10_000))
    assert image_size(tmp_path / "a.png") == (10_000, 10_000)  # over Pillow's warning limit: no warning, no error


@pytest.mark.parametrize(("data", "code"), [
    (png_header(100_000, 100_000), "image_too_large"),  # Pillow's DecompressionBombError
    (png_header(20_000, 10_000), "image_too_large"),
    (b"not an image", "image_corrupt"),
    (png_header(64, 48)[:20], "image_corrupt"),
])
def test_image_size_problems_are_dataset_errors(data: bytes, code: str) -> None:
    with pytest.raises(DatasetError) as e:
        image_size(data, "a.json", "imageData")
    assert e.value.code == code and str(e.value).startswith("a.json: imageData")


def test_check_image_size() -> None:
    assert check_image_size(48, 64, "x") == (48, 64)
    with pytest.raises(DatasetError, match="image_too_large|pixels"):
        check_image_size(MAX_IMAGE_PIXELS, 2, "x")
    with pytest.raises(DatasetError, match="at least 1x1"):
        check_image_size(0, 5, "x")


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found") as e:
        image_size(tmp_path / "gone.png")
    assert e.value.code == "image_missing"


# -- short messages ----------------------------------------------------------------------------
def test_short_repr_is_bounded_in_length_and_work() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    for value in ("x" * 10_000_000, int("9" * 4000), deep, {"k": list(range(10**5))}, [[1, 2], [3, 4]] * 10_000):
        t0 = time.perf_counter()
        text = short_repr(value)
        assert len(text) <= 60 and "\n" not in text and time.perf_counter() - t0 < 0.5, text
    assert short_repr(["x"]) == "['x']" and short_repr(True) == "True" and short_repr(float("nan")) == "nan"


def test_short_text_keeps_head_and_tail() -> None:
    assert short_text("abc") == "abc"
    t = short_text("a" * 1000 + "END", 50)
    assert len(t) <= 50 and t.endswith("END") and "..." in t
    assert short_text("a\nb") == "a b"


def test_unknown_name_lists_at_most_30_options() -> None:
    e = UnknownNameError("class", "x" * 10_000, [f"c{i}" for i in range(100_000)])
    assert "(and 99970 more)" in str(e) and len(str(e)) < 600
