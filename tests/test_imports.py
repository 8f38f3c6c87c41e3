"""Heavy packages stay out of the import path of the CLI, the converters and the dataset tools."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "torchvision", "ultralytics", "albumentations", "onnxruntime", "matplotlib", "fiftyone")


def test_cli_and_formats_import_no_heavy_package():
    code = (
        "import sys\n"
        "import edgevision.cli, edgevision.convert, edgevision.demo\n"
        "from edgevision.formats import list_formats, get_format\n"
        "[get_format(n) for n in list_formats()]\n"
        "import edgevision.data.validate, edgevision.data.split, edgevision.data.tile, edgevision.data.stats\n"
        "import edgevision.data.remap, edgevision.data.synth, edgevision.recipes\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]", res.stdout


def test_serve_package_and_cli_import_no_server_stack():
    """`edgevision --help` and `import edgevision.serve` load neither the HTTP stack nor onnxruntime."""
    code = (
        "import sys\n"
        "import edgevision.cli, edgevision.serve, edgevision.commands.serve, edgevision.bench, edgevision.commands.bench, "
        "edgevision.reliability, edgevision.reliability.gate, edgevision.commands.reliability\n"
        f"print(sorted(m for m in {HEAVY + ('fastapi', 'uvicorn', 'starlette', 'prometheus_client')!r} "
        "if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]", res.stdout
