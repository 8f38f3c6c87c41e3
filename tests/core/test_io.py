import pytest

from edgevision.core import DatasetError, OnError, Report
from edgevision.core.errors import OutputExistsError
from edgevision.core.io import ImageIndex, atomic_dir, load_json, parse_xml, read_image_size, safe_relpath
from edgevision.core.report import SkipItem
from tests.formats.conformance import write_image


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.jpg", "a/../../x.jpg", "C:\\data\\x.jpg", "C:/x.jpg"])
def test_safe_relpath_rejects_escapes(name):
    with pytest.raises(DatasetError, match="ann.json") as e:
        safe_relpath(name, "ann.json")
    assert e.value.code == "path_escape"


def test_safe_relpath_normalizes():
    assert safe_relpath("imgs\\sub\\a b.jpg", "w") == "imgs/sub/a b.jpg"
    assert safe_relpath("./a/../b.jpg", "w") == "b.jpg"


def test_atomic_dir_success_failure_and_existing(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "f.txt").write_text("x")
        assert not out.exists()
    assert (out / "f.txt").read_text() == "x"
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "g.txt").write_text("y")
        raise RuntimeError("boom")
    assert (out / "f.txt").exists() and not (out / "g.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "temporary folder left behind"
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "g.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["g.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_image_index_forgives_extension_and_case(tmp_path):
    write_image(tmp_path / "imgs" / "Patches_104.JPG", (8, 8))
    write_image(tmp_path / "imgs" / "sub" / "b c.png", (8, 8))
    idx = ImageIndex(tmp_path / "imgs")
    assert len(idx) == 2
    assert idx.find("patches_104") == tmp_path / "imgs" / "Patches_104.JPG"
    assert idx.find("patches_104.jpg") == tmp_path / "imgs" / "Patches_104.JPG"
    assert idx.find("other/dir/b c.png") == tmp_path / "imgs" / "sub" / "b c.png"
    assert idx.find("missing.jpg") is None


def test_read_image_size_and_errors(tmp_path):
    p = write_image(tmp_path / "a.png", (12, 34))
    assert read_image_size(p) == (12, 34)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError) as e:
        read_image_size(bad)
    assert e.value.code == "image_corrupt" and "bad.jpg" in str(e.value)
    with pytest.raises(DatasetError) as e:
        read_image_size(tmp_path / "none.jpg")
    assert e.value.code == "image_missing"


def test_load_json_truncated(tmp_path):
    p = tmp_path / "ann.json"
    p.write_text('{"images": [1, 2')
    with pytest.raises(DatasetError, match=r"ann.json: malformed JSON at line 1") as e:
        load_json(p)
    assert "\n" not in str(e.value)


def test_parse_xml_refuses_entity_expansion(tmp_path):
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        "<annotation><filename>&b;</filename></annotation>"
    )
    with pytest.raises(DatasetError, match="unsafe XML refused") as e:
        parse_xml(bomb)
    assert e.value.code == "xml_unsafe"
    ext = tmp_path / "ext.xml"
    ext.write_text('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>')
    with pytest.raises(DatasetError, match="unsafe XML refused"):
        parse_xml(ext)
    broken = tmp_path / "broken.xml"
    broken.write_text("<annotation><object>")
    with pytest.raises(DatasetError, match="broken.xml: malformed XML"):
        parse_xml(broken)


def test_report_policies():
    with pytest.raises(DatasetError, match="f.txt:line 2: bad"):
        Report(OnError.FAIL).error("x", "f.txt:line 2", "bad")
    skip = Report("skip")
    g = skip.guard("a")
    with g:
        skip.error("box_nan", "a:object[0]", "nan")
        raise AssertionError("not reached")
    assert not g.ok and skip.skipped[0].code == "box_nan"
    with pytest.raises(DatasetError):  # outside an item, skip cannot skip
        skip.error("x", "file", "whole file bad")
    keep = Report("keep")
    with keep.guard("b") as g2:
        keep.error("box_nan", "b:object[0]", "nan")
    assert g2.ok and keep.errors[0].where == "b:object[0]" and not keep.skipped
    with pytest.raises(SkipItem):
        r = Report("skip")
        r._in_item = 1
        r.error("c", "w", "m")



def test_check_output_path_protects_the_source(tmp_path):
    from edgevision.core.errors import EdgeVisionError
    from edgevision.core.io import check_output_path

    src = tmp_path / "data" / "src"
    (src / "ann").mkdir(parents=True)
    (src / "ann" / "a.json").write_text("{}")
    check_output_path(src, tmp_path / "out")  # fine
    (tmp_path / "other").mkdir()
    with pytest.raises(OutputExistsError):
        check_output_path(src, tmp_path / "other")
    with pytest.raises(EdgeVisionError, match="it contains"):  # checked first: --overwrite would not help
        check_output_path(src, tmp_path / "data")
    for dst in (src, src / "inside", tmp_path / "data", tmp_path):  # same, inside, containing (would be deleted)
        with pytest.raises(EdgeVisionError, match="source is never modified"):
            check_output_path(src, dst, overwrite=True)
    with pytest.raises(EdgeVisionError, match="nor contain it"):  # a file source: its folder is the root
        check_output_path(src / "ann" / "a.json", src / "ann" / "out", overwrite=True)
    assert (src / "ann" / "a.json").exists()
