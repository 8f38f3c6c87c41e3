"""Suite-wide fixtures: the tiny trained models of `tests.tiny_models` (trained lazily, once per session).

With pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) every test gets a group so that each
expensive session fixture is built by one worker only: tests using the really trained ``learned``
model form one group, tests using the other trained runs another, and every other test stays with
its module (module-scoped fixtures are built once).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.tiny_models"]

_LEARNED = {"learned"}
_TINY_RUNS = {"yolov8_run", "yolo26_run", "tv_run", "v8_onnx", "y26_onnx"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        group = ("trained-learned" if used & _LEARNED else "trained-tiny" if used & _TINY_RUNS
                 else item.nodeid.split("::", 1)[0])
        item.add_marker(pytest.mark.xdist_group(group))
