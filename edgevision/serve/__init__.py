"""The HTTP detection service behind ``edgevision serve`` (the ``serve`` extra: FastAPI, uvicorn,
python-multipart, prometheus-client).

    >>> from edgevision.serve import ServeConfig, run_server            # doctest: +SKIP
    >>> run_server(ServeConfig(model="model.int8.onnx", port=8080))      # doctest: +SKIP

`create_app` builds the ASGI app around a loaded `Detector` (for embedding in another server);
`run_server` adds the model checks, the socket and the SIGTERM drain. Importing this package imports
neither FastAPI nor onnxruntime; the submodules do.
"""

from __future__ import annotations

from typing import Any

from edgevision.serve.config import ENV, ServeConfig, read_token

__all__ = ["ENV", "ServeConfig", "create_app", "read_token", "run_server"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from edgevision.serve.app import create_app

        return create_app
    if name == "run_server":
        from edgevision.serve.server import run_server

        return run_server
    raise AttributeError(f"module 'edgevision.serve' has no attribute {name!r}")
