"""Suite-wide fixtures and tiers.

Fixtures: the trained models of `tests.tiny_models` (trained lazily, once per test run for every pytest
process, through `tests.model_cache`).

Tiers (``make test-fast`` runs ``-m "not trains and not installs and not slow"``):

* ``trains``: the test trains a model, itself or through a shared trained-model fixture (set here for
  every test that uses one of `TRAINED_FIXTURES`, by hand on the others);
* ``installs``: the test installs packages into a fresh virtual environment.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.tiny_models"]

TRAINED_FIXTURES = frozenset({"learned", "yolov8_run", "yolo26_run", "tv_run", "ly_run", "ly_onnx", "v8_onnx",
                              "y26_onnx"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)  # a fixture named by a parameter (request.getfixturevalue)
        if callspec is not None:
            used |= {v for v in callspec.params.values() if isinstance(v, str)}
        if TRAINED_FIXTURES & used:
            item.add_marker(pytest.mark.trains)
