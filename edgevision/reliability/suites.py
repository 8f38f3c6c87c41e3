"""The reliability suites: soak, robustness, determinism, bad input, concurrency.

Each suite takes what it runs as an argument (an inference callable or a `Detector`), so the same code
judges the real model and, in the tests, a planted fault (a leak, a wrong answer under threads).
Each returns a `SuiteResult`: ``status`` (``pass`` / ``fail`` / ``error``), its numbers, and findings
(one line each).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["SuiteResult", "bad_input", "concurrency", "current_rss_mb", "determinism", "leak_verdict",
           "robustness", "soak"]

log = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    name: str
    status: str  # pass | fail | error | skipped
    metrics: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "metrics": self.metrics, "findings": self.findings,
                "seconds": round(self.seconds, 3)}


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc; elsewhere the peak from getrusage, or None)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024
    except ImportError:
        return None


# ------------------------------------------------------------------------------------------------ soak
def _theil_sen(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Median of pairwise slopes: a line fit a few outliers (a GC pause, an arena growing once) cannot drag."""
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    ok = dx > 0
    return float(np.median((y[j] - y[i])[ok] / dx[ok])) if ok.any() else 0.0


def leak_verdict(t_s: Sequence[float], rss_mb: Sequence[float], limit_mb_per_h: float,
                 floor_mb: float = 4.0, calls: Sequence[float] | None = None) -> tuple[bool, float, float]:
    """``(leak, slope MB/hour, growth MB over the run)`` of RSS samples after warm-up.

    A leak: the robust slope exceeds ``limit_mb_per_h`` *and* the fitted growth over the run exceeds
    ``floor_mb`` (a short soak extrapolates noise to large hourly rates; a real leak also grows in absolute
    terms).

    With ``calls`` (the calls made by each sample) the growth is fitted per call and the hourly slope is that
    growth over the samples' time span: a leak that follows the calls is measured right when the calls' pace
    varies (another process taking the CPU for a while bends RSS-over-time but not RSS-over-calls). Without,
    RSS is fitted over time.
    """
    t, r = np.asarray(t_s, np.float64), np.asarray(rss_mb, np.float64)
    if len(t) < 3:
        return False, 0.0, 0.0
    span_s = float(t[-1] - t[0])
    if calls is not None:
        c = np.asarray(calls, np.float64)
        growth = _theil_sen(c, r) * float(c[-1] - c[0])
        slope_h = growth / span_s * 3600.0 if span_s > 0 else 0.0
    else:
        slope_s = _theil_sen(t, r)
        growth, slope_h = slope_s * span_s, slope_s * 3600.0
    return bool(slope_h > limit_mb_per_h and growth > floor_mb), slope_h, growth


def soak(infer: Callable[[Any], Any], images: Sequence[Any], *, seconds: float | None = 60.0,
         count: int | None = None, windows: int = 10, limit_mb_per_h: float = 50.0,
         progress: Callable[[int, int], None] | None = None) -> SuiteResult:
    """Call ``infer(image)`` over ``images`` (cycled) for ``seconds`` or ``count`` calls.

    Per window (``windows`` equal slices of the run): calls, errors, p50 / p99 latency, RSS at its end.
    The first window is warm-up for the memory verdict (allocators and caches settle there).
    """
    if not images:
        raise ValueError("no images to soak with")
    t_start = time.perf_counter()
    n_total = count if count is not None else None
    lat: list[float] = []
    errors: list[str] = []
    marks: list[tuple[float, int, float | None]] = []  # (t, calls so far, rss)
    gc.collect()
    rss0 = current_rss_mb()
    step = (seconds or 0.0) / windows if n_total is None else None
    per = max(1, (n_total or 0) // windows) if n_total is not None else None
    next_mark = step if step is not None else per
    i = 0
    while True:
        elapsed = time.perf_counter() - t_start
        if (n_total is not None and i >= n_total) or (n_total is None and elapsed >= (seconds or 0.0)):
            break
        t0 = time.perf_counter()
        try:
            infer(images[i % len(images)])
        except Exception as e:  # noqa: BLE001  a soak counts failures instead of stopping at the first
            if len(errors) < 20:
                errors.append(f"call {i}: {e.__class__.__name__}: {' '.join(str(e).split())[:160]}")
            else:
                errors.append("")
        lat.append((time.perf_counter() - t0) * 1e3)
        i += 1
        now = time.perf_counter() - t_start
        if (step is not None and next_mark is not None and now >= next_mark) or (per is not None and i % per == 0):
            marks.append((now, i, current_rss_mb()))
            if step is not None and next_mark is not None:
                next_mark += step
            if progress is not None:
                progress(len(marks), windows)
    total_s = time.perf_counter() - t_start
    if not marks or marks[-1][1] != i:
        marks.append((total_s, i, current_rss_mb()))
    win: list[dict[str, Any]] = []
    prev = 0
    for t, calls, rss in marks:
        chunk = lat[prev:calls]
        if chunk:
            a = np.asarray(chunk)
            win.append({"t_s": round(t, 3), "calls": len(chunk), "calls_total": calls, "p50_ms": float(np.percentile(a, 50)),
                        "p99_ms": float(np.percentile(a, 99)), "rss_mb": rss})
        prev = calls
    after = [w for w in win[1:] if w["rss_mb"] is not None] if len(win) > 2 else []
    leak, slope, growth = leak_verdict([float(w["t_s"]) for w in after], [float(w["rss_mb"]) for w in after],
                                       limit_mb_per_h, calls=[float(w["calls_total"]) for w in after])
    a = np.asarray(lat) if lat else np.zeros(1)
    n_err = len(errors)
    metrics = {"calls": i, "seconds": round(total_s, 3), "errors": n_err, "p50_ms": float(np.percentile(a, 50)),
               "p99_ms": float(np.percentile(a, 99)) if len(lat) >= 662 else None,
               "max_ms": float(a.max()), "rss_start_mb": rss0, "rss_end_mb": marks[-1][2],
               "rss_slope_mb_per_h": slope, "rss_growth_mb": growth, "leak": leak,
               "leak_limit_mb_per_h": limit_mb_per_h, "windows": win}
    findings = [e for e in errors if e]
    if leak:
        findings.insert(0, f"memory grows {slope:.0f} MB/hour ({growth:.1f} MB over {total_s:.0f} s after warm-up), "
                           f"above {limit_mb_per_h:g} MB/hour: a leak")
    status = "fail" if leak or n_err else "pass"
    return SuiteResult("soak", status, metrics, findings, total_s)


# ------------------------------------------------------------------------------------------------ robustness
def robustness(score: Callable[[Callable[[NDArray[np.uint8]], NDArray[np.uint8]] | None], float | None],
               corruptions: Sequence[str], severities: Sequence[int], seed: int,
               progress: Callable[[int, int], None] | None = None) -> SuiteResult:
    """mAP50-95 under each corruption and severity, mPC and rPC (Michaelis et al., 2019).

    Args:
        score: ``score(transform)`` -> mAP50-95 of the model on the evaluation images, each image passed
            through ``transform`` (None: clean).
    """
    from edgevision.reliability.corruptions import corrupt

    t0 = time.perf_counter()
    clean = score(None)
    table: dict[str, dict[str, float | None]] = {}
    total, done = len(corruptions) * len(severities), 0
    for ci, name in enumerate(corruptions):
        table[name] = {}
        for s in severities:
            def tf(img: NDArray[np.uint8], name: str = name, s: int = s, ci: int = ci) -> NDArray[np.uint8]:
                return corrupt(img, name, s, seed + 1000 * ci + s)

            table[name][str(s)] = score(tf)
            done += 1
            if progress is not None:
                progress(done, total)
    vals = [v for row in table.values() for v in row.values() if v is not None]
    mpc = float(np.mean(vals)) if vals else None
    rpc = mpc / clean if mpc is not None and clean else None
    per_corr = {n: float(np.mean([v for v in row.values() if v is not None])) if any(v is not None for v in row.values())
                else None for n, row in table.items()}
    scored = {n: v for n, v in per_corr.items() if v is not None}
    worst = min(scored, key=lambda n: scored[n]) if scored else None
    findings = []
    if worst is not None and clean:
        findings.append(f"weakest under {worst}: mean mAP50-95 {scored[worst]:.3f} against {clean:.3f} clean")
    metrics = {"clean_map50_95": clean, "mpc": mpc, "rpc": rpc, "per_corruption": per_corr, "table": table,
               "seed": seed}
    return SuiteResult("robustness", "pass", metrics, findings, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ determinism
def _same(a: Any, b: Any) -> bool:
    return bool(len(a) == len(b) and np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.scores, b.scores)
                and np.array_equal(a.class_ids, b.class_ids))


def _max_diff(a: Any, b: Any) -> float | None:
    """Largest box / score difference between two detection sets of the same length and classes, else None."""
    if len(a) != len(b) or not np.array_equal(a.class_ids, b.class_ids):
        return None
    if not len(a):
        return 0.0
    return float(max(np.abs(a.xyxy - b.xyxy).max() / 100.0, np.abs(a.scores - b.scores).max()))


def determinism(make_detector: Callable[[int | None], Any], images: Sequence[Any], *, repeats: int = 10,
                threads: Sequence[int | None] = (1, None), tolerance: float = 1e-3) -> SuiteResult:
    """The same input ``repeats`` times gives identical detections; other thread counts within ``tolerance``.

    ``tolerance`` bounds score differences and box differences in units of 100 px (1e-3: 0.1 px); a
    detection appearing or vanishing across thread counts (a score on a threshold) is reported.
    """
    t0 = time.perf_counter()
    findings: list[str] = []
    dets = {t: make_detector(t) for t in threads}
    base_t = threads[0]
    base = [dets[base_t](im) for im in images]
    unstable = 0
    for k, im in enumerate(images):
        for _ in range(repeats - 1):
            if not _same(dets[base_t](im), base[k]):
                unstable += 1
                findings.append(f"image {k}: a repeated call with {base_t or 'all'} thread(s) gave different detections")
                break
    worst = 0.0
    mismatched = 0
    for t in threads[1:]:
        for k, im in enumerate(images):
            d = _max_diff(dets[t](im), base[k])
            if d is None:
                mismatched += 1
                findings.append(f"image {k}: {t or 'all'} thread(s) found a different set of detections than "
                                f"{base_t or 'all'}")
            else:
                worst = max(worst, d)
    if worst > tolerance:
        findings.append(f"threads change scores / boxes by up to {worst:.2e}, above the tolerance {tolerance:g}")
    status = "pass" if not unstable and not mismatched and worst <= tolerance else "fail"
    metrics = {"images": len(images), "repeats": repeats, "threads": [t or "all" for t in threads],
               "unstable_images": unstable, "thread_mismatches": mismatched, "max_thread_difference": worst,
               "tolerance": tolerance}
    return SuiteResult("determinism", status, metrics, findings, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ bad input
def _bad_cases(work: Path, good: Path) -> list[tuple[str, Any, bool]]:
    """``(label, input, should_fail)``: broken files and arrays, and the odd-but-valid inputs that must work."""
    import struct
    import zlib

    import cv2

    work.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    (work / "zero-byte.png").write_bytes(b"")
    (work / "truncated.png").write_bytes(data[: max(20, len(data) // 3)])
    (work / "not-an-image.png").write_text("this is a log file, not an image\n")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    (work / "huge-40000x40000.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
    img = cv2.imread(str(good), cv2.IMREAD_COLOR)
    if img is None:
        from edgevision.core.errors import ConfigError

        raise ConfigError(f"{good}: the reference image for the bad-input suite cannot be read")
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return [
        ("zero-byte file", work / "zero-byte.png", True),
        ("truncated PNG", work / "truncated.png", True),
        ("text file named .png", work / "not-an-image.png", True),
        ("missing file", work / "does-not-exist.png", True),
        ("40000x40000 PNG header (decompression bomb)", work / "huge-40000x40000.png", True),
        ("float32 array", img.astype(np.float32) / 255.0, True),
        ("int32 array", img.astype(np.int32), True),
        ("(H, W, 2) array", np.zeros((64, 64, 2), np.uint8), True),
        ("(1, H, W, 3) array", img[None], True),
        ("empty (0, 0, 3) array", np.zeros((0, 0, 3), np.uint8), True),
        ("mono 8-bit image", grey, False),
        ("mono 16-bit image", grey.astype(np.uint16) * 257, False),
        ("BGRA image", cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), False),
        ("1x1 image", img[:1, :1], False),
    ]


def bad_input(infer: Callable[[Any], Any], good: Path, work: Path) -> SuiteResult:
    """Every broken input must raise one clear `EdgeVisionError` (no other exception, no silent answer), valid
    odd inputs (mono, 16-bit, BGRA, tiny) must work, and the good image must still work after each case."""
    from edgevision.core.errors import EdgeVisionError

    t0 = time.perf_counter()
    ref = infer(good)
    rows, findings, crashes = [], [], 0
    for label, value, should_fail in _bad_cases(work, good):
        outcome, message = "ok", ""
        try:
            infer(value)
        except EdgeVisionError as e:
            outcome, message = "clear error", " ".join(str(e).split())
        except Exception as e:  # noqa: BLE001  what we are looking for
            outcome, message = "crash", f"{e.__class__.__name__}: {' '.join(str(e).split())[:200]}"
        good_after = _same(infer(good), ref)
        ok = (outcome == "clear error" and "\n" not in message) if should_fail else outcome == "ok"
        if outcome == "crash" or not good_after:
            crashes += 1
        if not ok:
            findings.append(f"{label}: expected {'a clear error' if should_fail else 'detections'}, got {outcome}"
                            + (f" ({message})" if message else ""))
        if not good_after:
            findings.append(f"after {label}, the good image gave different detections")
        rows.append({"case": label, "expected": "clear error" if should_fail else "works", "outcome": outcome,
                     "message": message[:240], "ok": ok, "serving_after": good_after})
    status = "pass" if all(r["ok"] and r["serving_after"] for r in rows) else "fail"
    return SuiteResult("bad_input", status, {"cases": rows, "crashes": crashes}, findings, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ concurrency
def concurrency(infer: Callable[[Any], Any], images: Sequence[Any], *, workers: int = 4, rounds: int = 3) -> SuiteResult:
    """``workers`` threads calling one detector on ``images`` (``rounds`` times each) give the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    serial = [infer(im) for im in images]
    jobs = [k % len(images) for k in range(len(images) * rounds)]
    errors: list[str] = []

    def run(k: int) -> tuple[int, Any]:
        try:
            return k, infer(images[k])
        except Exception as e:  # noqa: BLE001
            errors.append(f"image {k}: {e.__class__.__name__}: {e}")
            return k, None

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(run, jobs))
    wrong = sorted({k for k, d in results if d is None or not _same(d, serial[k])})
    findings = [f"image {k}: concurrent calls gave different detections than a serial call" for k in wrong] + errors[:5]
    metrics = {"workers": workers, "calls": len(jobs), "wrong": len(wrong), "errors": len(errors),
               "cpu_count": os.cpu_count()}
    return SuiteResult("concurrency", "pass" if not wrong and not errors else "fail", metrics, findings,
                       time.perf_counter() - t0)
