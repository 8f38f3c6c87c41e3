"""The evaluator and the eval command import pycocotools and the model backends only when used."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light() -> None:
    code = ("import sys\nimport edgevision.evaluate, edgevision.commands.eval\n"
            "print(sorted(m for m in ('pycocotools', 'torch', 'ultralytics', 'matplotlib') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]", res.stdout
