"""INT8 static quantization check (onnxruntime.quantization), shared by the opset test and its study.

QDQ format, QUInt8 activations, QInt8 per-channel weights, MinMax calibration on a few images, after
``quant_pre_process``; the nodes after the head's last Conv layers (decode, concat of boxes and class
probabilities, top-k) stay float so that box pixels and class probabilities do not share one scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_images(folder: Path, size: int, n: int) -> list[np.ndarray]:
    """Up to ``n`` images of ``folder`` (recursive) as (1, 3, size, size) float32 RGB in [0, 1] (stretched)."""
    import cv2

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".jpeg", ".bmp"))[:n]
    out = []
    for f in files:
        img = cv2.imread(str(f))[:, :, ::-1]
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        out.append(np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0)
    return out


def tail_nodes(model) -> list[str]:
    """Names of the nodes that feed no Conv and are not Convs: the head's post-processing."""
    producers = {o: n for n in model.graph.node for o in n.output}
    feeds_conv: set[int] = set()
    stack = [n for n in model.graph.node if n.op_type == "Conv"]
    while stack:
        n = stack.pop()
        if id(n) in feeds_conv:
            continue
        feeds_conv.add(id(n))
        stack.extend(producers[i] for i in n.input if i in producers)
    return [n.name for n in model.graph.node if id(n) not in feeds_conv]


def quantize(src: Path, dst: Path, images: list[np.ndarray], input_name: str = "images",
             skip_symbolic_shape: bool = False) -> None:
    """Quantize ``src`` into ``dst``; ``skip_symbolic_shape`` for YOLO26 at opset >= 18 (see the export report)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + "_pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic_shape)
    model = onnx.load(str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{input_name: x} for x in images])

        def get_next(self):  # noqa: ANN201
            return next(self.it, None)

    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=tail_nodes(model), extra_options={"ActivationSymmetric": False})


def compare(fp32: Path, int8: Path, images: list[np.ndarray], layout: str, nc: int) -> dict[str, float]:
    """Class-score correlation and box error of INT8 vs FP32 raw outputs over ``images``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    a = ort.InferenceSession(str(fp32), opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])
    sa, sb, ba, bb = [], [], [], []
    for x in images:
        ya, yb = a.run(None, {"images": x})[0][0], b.run(None, {"images": x})[0][0]
        if layout == "yolo-raw":  # (4+nc, N)
            sa.append(ya[4:].ravel())
            sb.append(yb[4:].ravel())
            ba.append(ya[:4].ravel())
            bb.append(yb[:4].ravel())
        else:  # end2end (K, 6), sorted by score: compare the score curves and the top boxes
            sa.append(np.sort(ya[:, 4]))
            sb.append(np.sort(yb[:, 4]))
            ba.append(ya[:5, :4].ravel())
            bb.append(yb[:5, :4].ravel())
    sa_, sb_, ba_, bb_ = map(np.concatenate, (sa, sb, ba, bb))
    corr = float(np.corrcoef(sa_, sb_)[0, 1]) if sa_.std() > 0 and sb_.std() > 0 else float("nan")
    return {"score_corr": corr, "score_max_abs": float(np.abs(sa_ - sb_).max()),
            "box_rel_err": float(np.abs(ba_ - bb_).mean() / max(np.abs(ba_).mean(), 1e-9))}
