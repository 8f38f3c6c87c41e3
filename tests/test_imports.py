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


def _edgevision_imports(path) -> set[str]:
    """The ``edgevision.*`` modules a source file imports (anywhere in it, lazily too)."""
    import ast

    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgevision"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("edgevision"))
    return out


def test_imports_go_one_way_runtime_and_models_import_no_command_package():
    """The runtime (what a factory box installs) imports only itself and `edgevision.core`; `edgevision.models`,
    which every command opens models through, imports nothing from training's internals, export, quantize or
    the commands at module level, and nothing imports the deleted `edgevision.train.predict`."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "edgevision"
    for f in sorted((root / "runtime").rglob("*.py")):
        bad = {m for m in _edgevision_imports(f) if not m.startswith(("edgevision.runtime", "edgevision.core"))}
        assert not bad, f"{f.relative_to(root)} imports {sorted(bad)}"
    for f in sorted(root.rglob("*.py")):
        assert "edgevision.train.predict" not in _edgevision_imports(f), f
    models = _edgevision_imports(root / "models.py")
    assert not {m for m in models if m.startswith(("edgevision.quantize", "edgevision.export", "edgevision.bench",
                                                   "edgevision.commands", "edgevision.serve"))}, models
