"""EdgeVision: from line images in any annotation format to a quantized ONNX model on a factory box."""

__version__ = "0.1.0"

__all__ = ["__version__"]
