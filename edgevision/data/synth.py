"""The built-in sample dataset: deterministic synthetic rail-track scenes and steel-surface patches.

Every image is drawn with numpy and OpenCV only, from a random generator derived from
``(seed, index)``: image ``i`` (pixels, boxes and split) is the same whatever ``n`` is, and the same
``(seed, index, imgsz, kinds, background_fraction)`` always gives byte-identical pixels. Images are
written as PNG (lossless), so the decoded pixels of a written dataset are exactly the rendered ones.

Scenes:
    * ``rail``: gravel ballast, sleepers (concrete or wood) and two rails in perspective converging
      to a vanishing point, a fastener (clip and bolt) on each side of each rail on every sleeper,
      varied lighting (gradients, vignetting, shadow bands), blur and sensor noise.
    * ``steel``: a grey brushed / rolled strip surface with streaks, mottling and roll marks.

Classes, in this fixed order (canonical ids ``0..4`` whatever ``kinds`` is):
    ``crack`` (thin dark jagged line: along a rail head, across a sleeper, or branching on steel),
    ``squat`` (dark oval spall on a rail head), ``missing_fastener`` (a sleeper position where the
    clip and bolt are absent; the box covers the empty spot, i.e. exactly where the fastener would
    have been drawn), ``scratch`` (long thin bright or dark line on steel), ``pit`` (dark round pit
    with a bright rim on steel).

Boxes are exact: each defect is drawn as an alpha mask (after its own blur, with faint tails cut to
zero) and its box is the tight box of the mask's non-zero pixels, in the canonical continuous xyxy
frame, clipped to the image. Rendering the same image with ``defects=False`` (`render_sample`)
changes only pixels inside the union of the boxes. Each defect box is at least about 12 px long at
``imgsz=320`` (sizes scale with ``imgsz``). About ``background_fraction`` of the images have no
defect; the others have 1 to 4.

Splits are 80 / 10 / 10 train / val / test: each block of 10 consecutive indices holds 8 train, 1 val
and 1 test image in a seeded order, so any ``n >= 10`` has all three splits.

Images are square, ``imgsz x imgsz``, BGR uint8. The API:
    * `synth` writes the PNGs into a folder and returns the `Dataset` (``path`` set, names
      ``rail_0000.png`` / ``steel_0001.png`` = kind and index); what the CLI uses;
    * `generate` returns the `Dataset` and the images in memory;
    * `iter_samples` streams ``(image, record)`` pairs; `render_sample` renders one image, with or
      without its defects.
`synth` and `generate` render on a few threads; the output does not depend on them.

Typical use (what ``edgevision synth OUT --n 300 --seed 0 --to yolo`` does)::

    with tempfile.TemporaryDirectory() as tmp:
        ds = synth(Path(tmp) / "images", n=300, seed=0)   # PNGs + canonical Dataset (paths set)
        write_dataset(ds, "OUT", "yolo")                  # edgevision.convert.write_dataset
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgevision.core.cpu import usable_cores
from edgevision.core.dataset import Dataset, ImageRecord, LabelMap, ObjectList
from edgevision.core.errors import ConfigError, EdgeVisionError, UnknownNameError
from edgevision.core.signals import map_interruptibly, signals_deferred

log = logging.getLogger(__name__)

__all__ = [
    "CLASS_NAMES",
    "write_synth",
    "KINDS",
    "SYNTH_VERSION",
    "SynthConfig",
    "generate",
    "iter_samples",
    "render_sample",
    "synth",
]

SYNTH_VERSION = 1
"""Bumped whenever a change alters the pixels or labels produced for a given seed."""

CLASS_NAMES: tuple[str, ...] = ("crack", "squat", "missing_fastener", "scratch", "pit")
"""Defect classes in canonical id order."""

KINDS: tuple[str, ...] = ("rail", "steel")
"""Scene kinds that can be generated."""

_DEFECTS_BY_KIND: dict[str, tuple[tuple[str, float], ...]] = {
    "rail": (("crack", 0.25), ("squat", 0.375), ("missing_fastener", 0.375)),
    "steel": (("crack", 0.25), ("scratch", 0.375), ("pit", 0.375)),
}
_OBJECT_COUNT_P = (0.4, 0.3, 0.2, 0.1)  # P(1..4 defects) in a defect image
_SPLIT_SLOTS = ("train",) * 8 + ("val", "test")
_SHIFT = 4  # cv2 sub-pixel bits
_CUTOFF = 0.06  # alpha below this is cut to 0 so that a box covers every changed pixel
_MIN_LONG_PX = 12.0  # at imgsz=320: shortest allowed long side of a defect box
_MIN_SHORT_PX = 3.0  # at imgsz=320: shortest allowed short side
_MIN_IMGSZ = 64
_CHUNK = 16  # images rendered per switch of OpenCV to one thread

F32 = NDArray[np.float32]
_T = TypeVar("_T")
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; every knob is pinned.

    Attributes:
        n: number of images.
        seed: non-negative base seed; image ``i`` depends on ``(seed, i)`` only.
        imgsz: side of the square images in pixels (>= 64).
        kinds: scene kinds to draw from, a subset of `KINDS`.
        background_fraction: probability that an image has no defect, in ``[0, 1]``.
    """

    n: int = 300
    seed: int = 0
    imgsz: int = 320
    kinds: tuple[str, ...] = KINDS
    background_fraction: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str):
            object.__setattr__(self, "kinds", (self.kinds,))
        for k in self.kinds:
            if k not in KINDS:
                raise UnknownNameError("synthetic scene kind", k, KINDS)
        if not self.kinds:
            raise ConfigError(f"synth: expected at least one kind of {list(KINDS)}, got none")
        object.__setattr__(self, "kinds", tuple(k for k in KINDS if k in self.kinds))
        if int(self.n) < 0:
            raise ConfigError(f"synth: n must be >= 0, got {self.n}")
        if int(self.seed) < 0:
            raise ConfigError(f"synth: seed must be >= 0, got {self.seed}")
        if int(self.imgsz) < _MIN_IMGSZ:
            raise ConfigError(f"synth: imgsz must be >= {_MIN_IMGSZ}, got {self.imgsz}")
        if not 0.0 <= float(self.background_fraction) <= 1.0:
            raise ConfigError(f"synth: background_fraction must be in [0, 1], got {self.background_fraction}")


# --------------------------------------------------------------------------- public API


def render_sample(
    index: int, config: SynthConfig = SynthConfig(), *, defects: bool = True
) -> tuple[NDArray[np.uint8], ImageRecord]:
    """Render image ``index`` of the dataset described by ``config`` (``config.n`` is not used).

    Args:
        index: image index (``>= 0``).
        config: generator settings.
        defects: False renders the very same scene without any defect (every fastener present)
            and returns a record without objects; the pixels then differ only inside the boxes of
            the ``defects=True`` render.

    Returns:
        ``(H, W, 3)`` uint8 BGR image and its record (``path`` None, name ``<kind>_<index:04d>.png``,
        ``meta`` with ``kind``, ``index`` and ``seed``).
    """
    if index < 0:
        raise ConfigError(f"synth: image index must be >= 0, got {index}")
    with _cv2_single_thread():
        return _render(index, config, defects)


def _render(index: int, config: SynthConfig, defects: bool) -> tuple[NDArray[np.uint8], ImageRecord]:
    seed, sz = int(config.seed), int(config.imgsz)
    rng_meta, rng_scene, rng_defect, rng_post = (np.random.default_rng([seed, index, s]) for s in range(4))
    kind = config.kinds[int(rng_meta.integers(len(config.kinds)))]
    background = bool(rng_meta.random() < config.background_fraction)
    n_objects = 1 + int(rng_meta.choice(4, p=_OBJECT_COUNT_P))
    canvas = _SCENES[kind](rng_scene, sz)
    objects = ObjectList()
    if defects and not background:
        _add_defects(canvas, rng_defect, kind, n_objects, objects)
    canvas.finish()
    image = _finish(canvas.img, rng_post, kind)
    name = f"{kind}_{index:04d}.png"
    meta = {"kind": kind, "index": index, "seed": seed}
    return image, objects.record(name, (sz, sz), split=_split_of(seed, index), meta=meta)


def iter_samples(config: SynthConfig) -> Iterator[tuple[NDArray[np.uint8], ImageRecord]]:
    """Yield ``(image, record)`` for images ``0..config.n-1`` (see `render_sample`), a few at a time."""
    for start in range(0, config.n, _CHUNK):
        with _cv2_single_thread():
            chunk = [render_sample(i, config) for i in range(start, min(start + _CHUNK, config.n))]
        yield from chunk


@contextlib.contextmanager
def _cv2_single_thread() -> Iterator[None]:
    """Run OpenCV single-threaded: on small images its thread pool costs more than it gains (4x here)."""
    before = cv2.getNumThreads()
    if before == 1:
        yield
        return
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def generate(
    n: int = 300,
    seed: int = 0,
    imgsz: int = 320,
    kinds: Sequence[str] = KINDS,
    background_fraction: float = 0.1,
) -> tuple[Dataset, list[NDArray[np.uint8]]]:
    """Render a whole dataset in memory (on a few threads; the result does not depend on them).

    Returns:
        The canonical dataset (records with ``path=None``) and the ``(H, W, 3)`` uint8 BGR images,
        aligned with ``dataset.images``. For large ``n`` prefer `synth` (writes as it goes).
    """
    config = SynthConfig(n, seed, imgsz, tuple(kinds), background_fraction)
    with contextlib.closing(_in_threads(config, lambda i: _render(i, config, True))) as rendered:
        samples = list(rendered)
    return _dataset([rec for _, rec in samples], config, None), [img for img, _ in samples]


def synth(
    out_images_dir: Path | str,
    n: int = 300,
    seed: int = 0,
    imgsz: int = 320,
    kinds: Sequence[str] = KINDS,
    background_fraction: float = 0.1,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Render ``n`` images as PNG files into ``out_images_dir`` and return the canonical dataset.

    The folder is created if needed; files of the same name are overwritten. The returned records
    have ``path`` set to the PNGs and ``name`` equal to the file name (``rail_0000.png``, ...), and
    ``split`` set, so any writer (``write_dataset(ds, out, "yolo")``) makes a trainable dataset.
    The CLI renders into a temporary folder and then writes the requested format from it.
    ``progress(done, total)``, when given, is called after each image, from the calling thread.
    Images are rendered and encoded on a few threads; the files do not depend on them.

    Raises:
        ConfigError / UnknownNameError: invalid settings (before anything is written);
        EdgeVisionError: ``out_images_dir`` is a file.
    """
    config = SynthConfig(n, seed, imgsz, tuple(kinds), background_fraction)
    out = Path(out_images_dir)
    if out.exists() and not out.is_dir():
        raise EdgeVisionError(f"{out}: expected a folder for the synthetic images, got a file; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    # closing(): a signal raised here, outside the generator, must stop its threads before the caller removes `out`
    # (otherwise they keep writing into it until the generator is garbage-collected)
    with contextlib.closing(_in_threads(config, lambda i: _write_png(*_render(i, config, True), out))) as rendered:
        for rec in rendered:
            records.append(rec)
            if progress is not None:
                progress(len(records), config.n)
    log.info("synth: wrote %d images to %s", len(records), out)
    return _dataset(records, config, out)


def write_synth(
    dst: Path | str,
    n: int = 300,
    seed: int = 0,
    imgsz: int = 320,
    to: str = "yolo",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Generate the sample and write it as a ``to`` dataset at ``dst`` (what ``edgevision synth`` does).

    Images are rendered into a temporary folder beside ``dst`` and written through the format's
    writer, so ``dst`` appears only when complete.

    Raises:
        OutputExistsError: ``dst`` exists and ``overwrite`` is False (checked before rendering).
    """

    from edgevision.convert import write_dataset
    from edgevision.core.errors import OutputExistsError
    from edgevision.formats import get_format

    dst = Path(dst)
    get_format(to)
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst}: output already exists; choose another path or pass --overwrite")
    from edgevision.core.io import staging_dir

    with staging_dir(dst.parent, f".{dst.name}.render.") as tmp:
        ds = synth(tmp / "images", n=n, seed=seed, imgsz=imgsz, progress=progress)
        write_dataset(ds, dst, to, images="copy", overwrite=overwrite)
    return ds


def _write_png(img: NDArray[np.uint8], rec: ImageRecord, out: Path) -> ImageRecord:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - cv2 always encodes a uint8 BGR image
        raise ConfigError(f"synth: could not encode {rec.name} as PNG")
    rec.path = out / rec.name
    rec.path.write_bytes(buf.tobytes())  # not cv2.imwrite: it fails on non-ASCII paths on some platforms
    return rec


def _in_threads(config: SynthConfig, work: Callable[[int], _T]) -> Iterator[_T]:
    """``work(i)`` for ``i`` in ``0..n-1`` on a few threads (OpenCV and numpy release the GIL), in order."""
    workers = max(1, min(4, usable_cores()))
    with _cv2_single_thread():
        pool = concurrent.futures.ThreadPoolExecutor(workers, "synth")
        try:
            yield from map_interruptibly(pool, work, range(config.n), window=4 * workers)
        finally:  # on an error (a full disk) or a signal, do not render the rest
            with signals_deferred():
                pool.shutdown(wait=True, cancel_futures=True)


def _dataset(records: list[ImageRecord], config: SynthConfig, root: Path | None) -> Dataset:
    info = {
        "generator": "edgevision.data.synth",
        "version": SYNTH_VERSION,
        "n": config.n,
        "seed": config.seed,
        "imgsz": config.imgsz,
        "kinds": list(config.kinds),
        "background_fraction": config.background_fraction,
    }
    meta = {"format": "synth", "info": info}
    return Dataset(labels=LabelMap(list(CLASS_NAMES)), images=records, root=root, meta=meta)


def _split_of(seed: int, index: int) -> str:
    """Split of image ``index``: a seeded order of 8 train, 1 val, 1 test per block of 10 indices."""
    slots = np.random.default_rng([seed, 7919, index // 10]).permutation(10)
    return _SPLIT_SLOTS[int(slots[index % 10])]


# --------------------------------------------------------------------------- drawing primitives


def _fx(pts: ArrayLike) -> NDArray[np.int32]:
    """Float pixel coordinates to cv2 fixed point (``shift=_SHIFT``)."""
    return np.round(np.asarray(pts, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)


@dataclass
class _Mark:
    """A drawn thing: an alpha mask at ``(x0, y0)`` blended towards ``img * mul + add``."""

    x0: int
    y0: int
    alpha: F32
    mul: float
    add: NDArray[np.float32]
    omits: int | None = None  # for a missing fastener: the index of the fastener not to draw

    def box(self, size: int) -> Box | None:
        """Tight ``(x1, y1, x2, y2)`` integer box of the non-zero alpha inside the image, or None."""
        h, w = self.alpha.shape
        cx0, cy0 = max(0, -self.x0), max(0, -self.y0)
        cx1, cy1 = min(w, size - self.x0), min(h, size - self.y0)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        a = self.alpha[cy0:cy1, cx0:cx1] > 0
        rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
        if not len(rows):
            return None
        return (self.x0 + cx0 + int(cols[0]), self.y0 + cy0 + int(rows[0]),
                self.x0 + cx0 + int(cols[-1]) + 1, self.y0 + cy0 + int(rows[-1]) + 1)

    def apply(self, img: F32) -> None:
        b = self.box(img.shape[0])
        if b is None:
            return
        x1, y1, x2, y2 = b
        a = _bgr(self.alpha[y1 - self.y0:y2 - self.y0, x1 - self.x0:x2 - self.x0])
        region = img[y1:y2, x1:x2]
        region += cv2.multiply(a, cv2.add(region * np.float32(self.mul - 1), _scalar(self.add)))  # a * (target - img)


class _Pen:
    """Anti-aliased drawing on a local uint8 mask covering ``pts`` plus ``margin`` pixels."""

    def __init__(self, pts: ArrayLike, margin: float) -> None:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        self.x0 = int(np.floor(p[:, 0].min() - margin))
        self.y0 = int(np.floor(p[:, 1].min() - margin))
        w = int(np.ceil(p[:, 0].max() + margin)) - self.x0 + 1
        h = int(np.ceil(p[:, 1].max() + margin)) - self.y0 + 1
        self.mask = np.zeros((h, w), np.uint8)

    def _p(self, pts: ArrayLike) -> NDArray[np.int32]:
        return _fx(np.asarray(pts, dtype=np.float64) - (self.x0, self.y0))

    def polyline(self, pts: ArrayLike, thickness: int, value: int = 255) -> None:
        cv2.polylines(self.mask, [self._p(pts).reshape(-1, 1, 2)], False, value, thickness, cv2.LINE_AA, _SHIFT)

    def polygon(self, pts: ArrayLike, value: int = 255, mask: NDArray[np.uint8] | None = None) -> None:
        cv2.fillPoly(self.mask if mask is None else mask, [self._p(pts).reshape(-1, 1, 2)], value, cv2.LINE_AA, _SHIFT)

    def ellipse(self, centre: ArrayLike, axes: tuple[float, float], angle: float = 0.0, value: int = 255) -> None:
        c = tuple(int(v) for v in self._p(centre))
        ax = tuple(int(v) for v in _fx(np.maximum(axes, 0.5)))
        cv2.ellipse(self.mask, c, ax, angle, 0, 360, value, -1, cv2.LINE_AA, _SHIFT)

    def clip(self, polygon: ArrayLike) -> None:
        """Keep only what lies inside ``polygon``."""
        keep = np.zeros_like(self.mask)
        self.polygon(polygon, mask=keep)
        self.mask = ((self.mask.astype(np.uint16) * keep) // 255).astype(np.uint8)

    def mark(self, sigma: float, strength: float, mul: float, add: ArrayLike) -> _Mark:
        colour = np.asarray(add, dtype=np.float32).reshape(3)
        return _Mark(self.x0, self.y0, _alpha(self.mask, sigma, strength), float(mul), colour)


def _alpha(mask: NDArray[np.uint8], sigma: float, strength: float) -> F32:
    """Blur a drawn uint8 mask by ``sigma``, scale by ``strength``, cut faint tails to exactly 0."""
    a = mask.astype(np.float32) * np.float32(strength / 255.0)
    if sigma > 0.2:
        a = cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    a[a < _CUTOFF] = 0
    return a


def _union(boxes: Sequence[Box | None]) -> Box | None:
    bs = [b for b in boxes if b is not None]
    if not bs:
        return None
    return (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))


def _bgr(grey: F32) -> F32:
    """``(H, W)`` to ``(H, W, 3)`` (cv2: numpy broadcasting over 3 channels is ~10x slower)."""
    return cv2.cvtColor(np.ascontiguousarray(grey, dtype=np.float32), cv2.COLOR_GRAY2BGR)


def _scalar(bgr: ArrayLike) -> tuple[float, float, float, float]:
    b, g, r = (float(v) for v in np.asarray(bgr).reshape(3))
    return (b, g, r, 0.0)


def _tinted(grey: F32, bgr: ArrayLike) -> F32:
    """``(H, W)`` grey levels plus a per-channel offset, as ``(H, W, 3)`` float32."""
    return cv2.add(_bgr(grey), _scalar(bgr))


def _grey(v: float, tint: ArrayLike = (0, 0, 0)) -> NDArray[np.float32]:
    return (np.float32(v) + np.asarray(tint, dtype=np.float32)).astype(np.float32)


# --------------------------------------------------------------------------- scenes


@dataclass
class _Canvas:
    """A scene being drawn: float BGR pixels, the scene's geometry and marks still to stamp."""

    img: F32
    sc: float  # imgsz / 320
    track: _Track | None = None
    fasteners: _Fasteners | None = None  # drawn last, except those a defect omits
    omitted: set[int] = field(default_factory=set)

    @property
    def size(self) -> int:
        return self.img.shape[0]

    def finish(self) -> None:
        """Stamp the large fasteners that were not omitted (defects are stamped as they are placed)."""
        if self.fasteners is not None:
            for m in self.fasteners.marks(self.size, self.omitted):
                m.apply(self.img)


@dataclass
class _Track:
    """Two straight rails converging to the vanishing point ``(vx, vy)`` (``vy < 0``, above the image).

    A row ``y`` has the perspective scale ``s = (y - vy) / (H - vy)`` (1 at the bottom row); the
    ground depth is ``z = 1 / s``. Sleepers are ``(s_near, s_far)`` pairs.
    """

    size: int
    vx: float
    vy: float
    cx0: float
    gauge0: float
    head0: float
    fore: float  # vertical foreshortening at the bottom row (1 = seen from straight above)
    sleepers: list[tuple[float, float]] = field(default_factory=list)
    concrete: bool = True  # concrete or wooden sleepers

    def s(self, y: ArrayLike) -> NDArray[np.float64]:
        return (np.asarray(y, dtype=np.float64) - self.vy) / (self.size - self.vy)

    def y(self, s: float) -> float:
        return self.vy + (self.size - self.vy) * s

    def centre_x(self, y: ArrayLike, offset0: float) -> NDArray[np.float64]:
        """x of the line at ``offset0`` pixels (at the bottom row) right of the track centre."""
        s = self.s(y)
        return self.vx + (self.cx0 - self.vx + offset0) * s

    def rail_x(self, side: int, y: ArrayLike) -> NDArray[np.float64]:
        return self.centre_x(y, side * self.gauge0 / 2)

    def head(self, y: ArrayLike) -> NDArray[np.float64]:
        return self.head0 * self.s(y)

    def band(self, off_a: float, off_b: float, y_a: float, y_b: float) -> NDArray[np.float64]:
        """Quadrilateral between track offsets ``off_a..off_b`` (bottom-row pixels) and rows ``y_a..y_b``."""
        ys = [y_a, y_a, y_b, y_b]
        offs = [off_a, off_b, off_b, off_a]
        return np.array([[float(self.centre_x(y, o)), y] for y, o in zip(ys, offs, strict=True)])

    def sleeper_quad(self, k: int, extend: float = 1.0) -> NDArray[np.float64]:
        s_near, s_far = self.sleepers[k]
        half = 0.9 * self.gauge0 * extend
        return self.band(-half, half, self.y(s_near), self.y(s_far))


def _scene_rail(rng: np.random.Generator, size: int) -> _Canvas:
    sc = size / 320
    gauge0 = rng.uniform(0.45, 0.72) * size
    track = _Track(
        size=size, vx=rng.uniform(0.3, 0.7) * size, vy=-np.exp(rng.uniform(np.log(0.3), np.log(2.5))) * size,
        cx0=rng.uniform(0.38, 0.62) * size, gauge0=gauge0, head0=gauge0 * rng.uniform(0.1, 0.13),
        fore=rng.uniform(0.4, 0.8),
    )
    canvas = _Canvas(_ballast(rng, track, sc), sc, track)
    _sleepers(rng, canvas)
    _rails(rng, canvas)
    _fasteners(rng, canvas)
    canvas.img += _bgr(_noise(rng, size, rng.uniform(2, 6)))
    _scene_blur(rng, canvas)
    return canvas


def _ballast(rng: np.random.Generator, track: _Track, sc: float) -> F32:
    """Gravel as cellular (Worley) noise laid on the ground plane, so stones shrink with depth.

    Each cell of a jittered grid on the ground is a stone with its own grey level, brighter at its
    centre and dark in the gaps (where the nearest and second-nearest stone are equally far).
    Computed at half resolution and upscaled (the far field is blurry anyway).
    """
    size, half = track.size, max(track.size // 2, 1)
    table = 64
    offsets = rng.random((2, table, table), dtype=np.float32)
    values = rng.normal(0, 1, (table, table)).astype(np.float32)
    stone = rng.uniform(9, 14) * sc  # stone size, in bottom-row pixels
    step = np.float32(size / half)
    row = (np.arange(half, dtype=np.float32) + 0.5) * step
    col = (np.arange(half, dtype=np.float32) + 0.5) * step
    s = np.maximum(track.s(row), 1e-3).astype(np.float32)[:, None]
    gx = (col[None, :] - np.float32(track.vx)) / s / np.float32(stone)
    gz = np.broadcast_to((size - track.vy) / (track.fore * stone) / s, gx.shape).astype(np.float32)
    f1, f2, value = _worley(gx, gz, offsets, values)
    gap = np.clip((np.sqrt(f2) - np.sqrt(f1)) * 4, 0, 1)
    shade = (0.45 + 0.55 * gap) * (1.1 - 0.35 * f1)
    base, spread = rng.uniform(85, 135), rng.uniform(16, 28)
    grey = (base + spread * value) * shade
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_LINEAR)
    return _tinted(grey, _grey(0, rng.uniform(-8, 8, 3)))


def _worley(gx: F32, gz: F32, offsets: F32, values: F32) -> tuple[F32, F32, F32]:
    """Squared distances to the nearest and second-nearest jittered grid point, and the nearest's value.

    Args:
        gx, gz: ``(H, W)`` ground coordinates in cell units.
        offsets: ``(2, T, T)`` point offsets inside each cell (``T`` a power of two; the grid wraps).
        values: ``(T, T)`` one value per cell.
    """
    table = offsets.shape[1]
    ox, oz, vals = offsets[0].ravel(), offsets[1].ravel(), values.ravel()
    floor_x, floor_z = np.floor(gx), np.floor(gz)
    ix, iz = floor_x.astype(np.int32), floor_z.astype(np.int32)
    fx, fz = gx - floor_x, gz - floor_z  # float32 (int32 - float32 would be float64)
    f1 = np.full(gx.shape, np.inf, np.float32)
    f2 = f1.copy()
    value = np.zeros(gx.shape, np.float32)
    # the nearest points lie in this cell or its neighbours towards the pixel (2 x 2 cells, not 3 x 3)
    one = np.float32(1)
    sx, sz = np.where(fx < 0.5, -one, one), np.where(fz < 0.5, -one, one)
    for dz in (0, 1):
        row = ((iz + (sz * dz).astype(np.int32)) & (table - 1)) * table
        rel_z = sz * np.float32(dz) - fz
        for dx in (0, 1):
            idx = row + ((ix + (sx * dx).astype(np.int32)) & (table - 1))
            ddx = ox.take(idx) + (sx * np.float32(dx) - fx)
            ddz = oz.take(idx) + rel_z
            d = ddx * ddx + ddz * ddz
            closer = d < f1
            np.minimum(f2, d, out=f2)
            np.copyto(f2, f1, where=closer)
            np.copyto(value, vals.take(idx), where=closer)
            np.minimum(f1, d, out=f1)
    return f1, f2, value


def _sleepers(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Sleepers every ~0.42 gauge in depth, ~0.17 gauge thick, far to near."""
    t = canvas.track
    assert t is not None
    t.concrete = bool(rng.random() < 0.65)
    colour = _grey(rng.uniform(135, 185), (0, 4, 10)) if t.concrete else _grey(rng.uniform(55, 85), (-25, -8, 12))
    per_gauge = t.fore * t.gauge0 / (t.size - t.vy)  # depth z per gauge length
    spacing, thick = 0.42 * per_gauge * rng.uniform(0.9, 1.15), 0.17 * per_gauge * rng.uniform(0.9, 1.25)
    z = 1.0 - spacing * rng.uniform(0, 1)
    while t.y(1 / z) > -2 and len(t.sleepers) < 400:
        t.sleepers.append((1 / z, 1 / (z + thick)))
        z += spacing
    for k in reversed(range(len(t.sleepers))):
        quad = t.sleeper_quad(k, rng.uniform(0.97, 1.03))
        col = tuple(float(c) for c in colour + rng.normal(0, 7))
        cv2.fillConvexPoly(canvas.img, _fx(quad), col, cv2.LINE_AA, _SHIFT)


def _rails(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Each rail: a dark rusty foot/web band with a bright polished head on top."""
    t = canvas.track
    assert t is not None
    foot_col = _grey(rng.uniform(45, 75), (-15, -5, 15))
    head_col = _grey(rng.uniform(150, 195), (6, 3, 0))
    shine = _grey(rng.uniform(205, 240), (4, 2, 0))
    top, bottom = -4.0, t.size + 4.0
    for side in (-1, 1):
        c = side * t.gauge0 / 2
        for half, col in ((0.8, foot_col), (0.5, head_col), (0.22, shine)):
            quad = t.band(c - half * t.head0, c + half * t.head0, bottom, top)
            cv2.fillConvexPoly(canvas.img, _fx(quad), tuple(float(v) for v in col), cv2.LINE_AA, _SHIFT)


def _fastener_layout(t: _Track) -> NDArray[np.float64]:
    """``(K, 4)`` centre x, centre y, full width, full height of the fasteners of every sleeper.

    Four per sleeper: inside and outside each rail, on the sleeper's centre line.
    """
    if not t.sleepers:
        return np.zeros((0, 4))
    s_near, s_far = np.array(t.sleepers).T
    y_near, y_far = t.vy + (t.size - t.vy) * s_near, t.vy + (t.size - t.vy) * s_far
    yc = (y_near + y_far) / 2
    head = t.head(yc)
    fw, fh = 0.95 * head, np.minimum(0.65 * head, 0.8 * (y_near - y_far))
    offset = 0.8 * head + 0.55 * fw
    rows = [np.stack([t.rail_x(side, yc) + sign * offset, yc, fw, fh], 1) for side in (-1, 1) for sign in (-1, 1)]
    return np.concatenate(rows)


@dataclass
class _Fasteners:
    """The large fasteners of a rail scene (``missing_fastener`` candidates), drawn all at once.

    Each is ``(centre, clip axes, bolt axes)`` in cv2 fixed point.
    """

    shapes: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]
    clip_col: NDArray[np.float32]
    bolt_col: NDArray[np.float32]
    sigma: float
    _cache: dict[frozenset[int], tuple[F32, F32]] = field(default_factory=dict)

    def add(self, centre: NDArray[np.float64], fw: float, fh: float) -> None:
        c, clip, bolt = (tuple(int(v) for v in _fx(p)) for p in (centre, (fw / 2, fh / 2), (0.3 * fh, 0.3 * fh)))
        self.shapes.append((c, clip, bolt))  # type: ignore[arg-type]

    def alphas(self, size: int, skip: set[int]) -> tuple[F32, F32]:
        """Full-image ``(H, W)`` alphas of the clips and of the bolts, leaving out ``skip``."""
        key = frozenset(skip)
        if key not in self._cache:
            body, bolt = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
            for i, (centre, clip_axes, bolt_axes) in enumerate(self.shapes):
                if i not in skip:
                    cv2.ellipse(body, centre, clip_axes, 0, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
                    cv2.ellipse(bolt, centre, bolt_axes, 0, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
            self._cache[key] = (_alpha(body, self.sigma, 1.0), _alpha(bolt, self.sigma, 1.0))
        return self._cache[key]

    def marks(self, size: int, skip: set[int]) -> list[_Mark]:
        body, bolt = self.alphas(size, skip)
        return [_Mark(0, 0, body, 0.0, self.clip_col), _Mark(0, 0, bolt, 0.0, self.bolt_col)]


def _fasteners(rng: np.random.Generator, canvas: _Canvas) -> None:
    """A clip and bolt on both sides of both rails on every sleeper.

    Small fasteners are painted into the scene now (they get the scene's blur and noise); large ones
    (``missing_fastener`` candidates) are kept in ``canvas.fasteners`` and drawn by `_Canvas.finish`.
    """
    t = canvas.track
    assert t is not None
    # dark clips on concrete, light galvanised ones on wood: a fastener always stands out from its sleeper
    clip_col = _grey(rng.uniform(22, 45), (4, 2, 0)) if t.concrete else _grey(rng.uniform(120, 150), (6, 3, 0))
    bolt_col = _grey(rng.uniform(60, 95), (-25, 0, 30))
    large = _Fasteners([], clip_col, bolt_col, 0.5 * canvas.sc)
    size, sc = canvas.size, canvas.sc
    for x, y, fw, fh in _fastener_layout(t).tolist():
        if fh < 1.5 or not (-fw < x < size + fw and -fh < y < size + fh):
            continue
        if fw >= 11 * sc and fh >= 7 * sc:
            large.add(np.array([x, y]), fw, fh)
            continue
        centre = tuple(_fx((x, y)).tolist())
        for axes, col in (((fw / 2, fh / 2), clip_col), ((0.3 * fh, 0.3 * fh), bolt_col)):
            cv2.ellipse(canvas.img, centre, tuple(_fx(axes).tolist()), 0, 0, 360, _scalar(col), -1, cv2.LINE_8, _SHIFT)
    canvas.fasteners = large


def _scene_steel(rng: np.random.Generator, size: int) -> _Canvas:
    """Brushed / rolled steel: directional streaks, mottling, roll marks; horizontal or vertical."""
    sc = size / 320
    base = rng.uniform(85, 165)
    klen = int(rng.integers(15, 61) * sc) | 1
    g = cv2.blur(_noise(rng, size), (klen, 1)) * np.float32(np.sqrt(klen) * rng.uniform(4, 11))
    mottle = cv2.resize(rng.standard_normal((6, 6), dtype=np.float32), (40, 40), interpolation=cv2.INTER_CUBIC)
    mottle = cv2.resize(mottle, (size, size), interpolation=cv2.INTER_LINEAR)
    g += mottle * np.float32(rng.uniform(4, 12))
    rows = np.arange(size, dtype=np.float32)[:, None]
    for _ in range(int(rng.integers(1, 4))):
        amp, period, phase = rng.uniform(2, 6), rng.uniform(20, 120) * sc, rng.uniform(0, 2 * np.pi)
        g += np.float32(amp) * np.sin(rows * np.float32(2 * np.pi / period) + np.float32(phase))
    if rng.random() < 0.5:
        g = np.ascontiguousarray(g.T)
    canvas = _Canvas(_tinted(g, _grey(base, (rng.uniform(0, 10), rng.uniform(0, 5), 0))), sc)
    _scene_blur(rng, canvas)
    return canvas


def _scene_blur(rng: np.random.Generator, canvas: _Canvas) -> None:
    sigma = rng.uniform(0, 1.1) * canvas.sc
    if sigma > 0.3:
        canvas.img = cv2.GaussianBlur(canvas.img, (0, 0), sigma)


@functools.lru_cache(maxsize=2)
def _noise_tile(side: int) -> F32:
    """A fixed ``(side, side)`` tile of standard normal noise (drawing fresh noise per image is slow)."""
    return np.random.default_rng([20240611, side]).standard_normal((side, side), dtype=np.float32)


def _noise(rng: np.random.Generator, size: int, sigma: float = 1.0) -> F32:
    """``(size, size)`` Gaussian noise: a randomly placed, flipped and transposed window of a tile."""
    tile = _noise_tile(max(1024, 1 << (2 * size - 1).bit_length()))  # at least twice the image side
    y, x = (int(v) for v in rng.integers(0, tile.shape[0] - size + 1, 2))
    win = tile[y:y + size, x:x + size]
    flip = int(rng.integers(8))
    if flip & 1:
        win = win[::-1]
    if flip & 2:
        win = win[:, ::-1]
    if flip & 4:
        win = win.T
    return win * np.float32(sigma)


_SCENES: dict[str, Callable[[np.random.Generator, int], _Canvas]] = {"rail": _scene_rail, "steel": _scene_steel}


def _finish(img: F32, rng: np.random.Generator, kind: str) -> NDArray[np.uint8]:
    """Lighting gain (gradient, vignetting, rail shadow bands) and sensor noise, then uint8."""
    size = img.shape[0]
    gain = cv2.resize(_gain(rng, kind, max(size // 4, 16)), (size, size), interpolation=cv2.INTER_LINEAR)
    out = cv2.multiply(img, _bgr(gain))
    out += _bgr(_noise(rng, size, rng.uniform(1.5, 5)))
    cv2.threshold(out, 0, 0, cv2.THRESH_TOZERO, dst=out)  # negatives to 0
    return cv2.convertScaleAbs(out)  # rounds and saturates at 255


def _gain(rng: np.random.Generator, kind: str, side: int) -> F32:
    """A smooth ``(side, side)`` illumination gain: level, gradient, vignetting, maybe a shadow band."""
    u = np.arange(side, dtype=np.float32) / side - np.float32(0.5)
    yy, xx = u[:, None], u[None, :]
    level, gx, gy = (np.float32(v) for v in (rng.uniform(0.75, 1.2), *rng.uniform(-0.4, 0.4, 2)))
    gain = level * (1 + gx * xx + gy * yy)
    gain = gain * (1 - np.float32(rng.uniform(0, 0.6)) * (xx * xx + yy * yy))
    if kind == "rail" and rng.random() < 0.35:
        ang = rng.uniform(0, np.pi)
        d = xx * np.float32(np.cos(ang)) + yy * np.float32(np.sin(ang)) - np.float32(rng.uniform(-0.3, 0.3))
        width, soft = rng.uniform(0.08, 0.3), 0.02
        inside = np.clip((width / 2 - np.abs(d)) / soft + 0.5, 0, 1)
        gain = gain * (1 - np.float32(rng.uniform(0.25, 0.45)) * inside)
    return gain.astype(np.float32)


# --------------------------------------------------------------------------- defects


def _add_defects(canvas: _Canvas, rng: np.random.Generator, kind: str, n_objects: int, objects: ObjectList) -> None:
    """Place up to ``n_objects`` non-overlapping defects (at least one), stamp them, record their boxes."""
    names, p = zip(*_DEFECTS_BY_KIND[kind], strict=True)
    placed: list[Box] = []
    attempts = 0
    while len(placed) < n_objects and attempts < 30 * n_objects:
        attempts += 1
        name = names[int(rng.choice(len(names), p=np.asarray(p) / sum(p)))]
        marks = _DEFECTS[name](rng, canvas)
        box = _union([m.box(canvas.size) for m in marks]) if marks else None
        if box is None or not _big_enough(box, canvas.sc) or any(_near(box, b, 2) for b in placed):
            continue
        for m in marks:
            m.apply(canvas.img)
            if m.omits is not None:
                canvas.omitted.add(m.omits)
        placed.append(box)
        objects.add(box, CLASS_NAMES.index(name))


def _big_enough(box: Box, sc: float) -> bool:
    w, h = box[2] - box[0], box[3] - box[1]
    return max(w, h) >= _MIN_LONG_PX * sc and min(w, h) >= _MIN_SHORT_PX * sc


def _near(a: Box, b: Box, gap: int) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _dark(rng: np.random.Generator, lo: float = 0.12, hi: float = 0.35) -> tuple[float, NDArray[np.float32]]:
    """Blend towards a darkened copy of the pixels (``mul``, ``add``)."""
    return rng.uniform(lo, hi), np.zeros(3, np.float32)


def _thickness(rng: np.random.Generator, sc: float) -> int:
    return max(1, int(round(rng.uniform(1.3, 2.6) * sc)))


def _walk(
    rng: np.random.Generator, start: ArrayLike, angle: float, length: float, step: float, wander: float
) -> NDArray[np.float64]:
    """A jagged polyline: a random walk of ``length / step`` steps with heading noise ``wander``."""
    n = max(2, int(length / step))
    headings = angle + np.cumsum(rng.normal(0, wander, n)) * 0.5 + rng.normal(0, wander, n)
    steps = np.stack([np.cos(headings), np.sin(headings)], 1) * step
    return np.vstack([start, np.asarray(start, dtype=np.float64) + np.cumsum(steps, 0)])


def _on_rail(rng: np.random.Generator, canvas: _Canvas, min_head: float) -> tuple[_Track, int, float] | None:
    """The track, a random rail side and a row where the rail head is at least ``min_head`` wide."""
    t = canvas.track
    if t is None:
        return None
    y_lo = max(t.vy + min_head / t.head0 * (t.size - t.vy), 0.0)
    if y_lo > t.size - 8:
        return None
    return t, int(rng.choice([-1, 1])), rng.uniform(y_lo, t.size - 4)


def _jagged(rng: np.random.Generator, n: int, limit: float, sc: float) -> NDArray[np.float64]:
    """``(n,)`` sideways offsets of a crack: a slow drift within ``±limit`` plus ~0.6 px jitter."""
    drift = rng.normal(0, 0.1) + np.cumsum(rng.normal(0, 0.06, n))
    return np.clip(drift, -1, 1) * limit + rng.normal(0, 0.6 * sc, n)


def _squat(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """A dark oval spall on a rail head, elongated along the rail, maybe with small cracks."""
    sc = canvas.sc
    at = _on_rail(rng, canvas, 13 * sc)
    if at is None:
        return []
    t, side, y = at
    head = float(t.head(y))
    x = float(t.rail_x(side, y)) + rng.normal(0, 0.06 * head)
    slope = float(t.rail_x(side, y + 1) - t.rail_x(side, y))
    angle = float(np.degrees(np.arctan2(-slope, 1.0)))
    pen = _Pen([[x, y]], head + 4)
    pen.ellipse((x, y), (head * rng.uniform(0.25, 0.4), head * rng.uniform(0.5, 0.95)), angle)
    for _ in range(int(rng.integers(0, 3))):  # little cracks radiating from the spall
        pen.polyline(_walk(rng, (x, y), rng.uniform(0, 2 * np.pi), head * 0.55, 2.0, 0.3), 1)
    return [pen.mark(rng.uniform(0.6, 1.3) * sc, rng.uniform(0.8, 0.97), *_dark(rng, 0.1, 0.3))]


def _crack(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """On steel a branching crack; on track a crack along a rail head or across a sleeper."""
    if canvas.track is None:
        return _crack_free(rng, canvas)
    return _crack_rail(rng, canvas) if rng.random() < 0.5 else _crack_sleeper(rng, canvas)


def _crack_free(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """A branching crack anywhere on a surface."""
    sc, size = canvas.sc, canvas.size
    start = rng.uniform(0.05, 0.95, 2) * size
    main = _walk(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(30, 100) * sc, 3 * sc, 0.35)
    pen = _Pen(main, 60 * sc)
    thick = _thickness(rng, sc)
    pen.polyline(main, thick)
    for _ in range(int(rng.integers(0, 3))):
        i = int(rng.integers(1, len(main)))
        d = main[i] - main[i - 1]
        ang = np.arctan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
        branch = _walk(rng, main[i], ang, rng.uniform(0.2, 0.5) * len(main) * 3 * sc, 3 * sc, 0.35)
        pen.polyline(branch, max(1, thick - 1))
    return [pen.mark(rng.uniform(0, 0.8) * sc, rng.uniform(0.75, 0.95), *_dark(rng))]


def _crack_rail(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """A jagged crack running along a rail head."""
    sc = canvas.sc
    at = _on_rail(rng, canvas, 12 * sc)
    if at is None:
        return []
    t, side, y0 = at
    ys = y0 + np.arange(0, rng.uniform(22, 60) * sc, 2.5 * sc) * rng.choice([-1, 1])
    pts = np.stack([t.rail_x(side, ys) + _jagged(rng, len(ys), 0.3 * t.head(ys), sc), ys], 1)
    pen = _Pen(pts, 8 * sc)
    pen.polyline(pts, _thickness(rng, sc))
    return [pen.mark(rng.uniform(0, 0.7) * sc, rng.uniform(0.75, 0.95), *_dark(rng, 0.08, 0.25))]


def _crack_sleeper(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """A jagged crack along a sleeper, between the rails, clipped to the sleeper."""
    t, sc = canvas.track, canvas.sc
    assert t is not None
    big = [k for k, (sn, sf) in enumerate(t.sleepers) if t.y(sn) - t.y(sf) >= 9 * sc and t.y(sf) < t.size - 6]
    if not big:
        return []
    k = big[int(rng.integers(len(big)))]
    sn, sf = t.sleepers[k]
    y_near, y_far = t.y(sn), t.y(sf)
    yc = (y_near + y_far) / 2
    left = float(t.rail_x(-1, yc) + 2.3 * t.head(yc))
    right = float(t.rail_x(1, yc) - 2.3 * t.head(yc))
    length = min(rng.uniform(25, 70) * sc, right - left)
    if length < 14 * sc:
        return []
    x0 = rng.uniform(left, right - length)
    xs = x0 + np.arange(0, length, 3 * sc)
    ys = yc + _jagged(rng, len(xs), 0.4 * (y_near - y_far), sc)
    pts = np.stack([xs, ys], 1)
    pen = _Pen(pts, 8 * sc)
    pen.polyline(pts, _thickness(rng, sc))
    pen.clip(t.sleeper_quad(k))
    return [pen.mark(rng.uniform(0, 0.6) * sc, rng.uniform(0.8, 0.97), *_dark(rng, 0.08, 0.25))]


def _missing_fastener(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """Omit one large fastener.

    Returns:
        Its footprint (an identity blend: its box is exactly where the drawn fasteners change when
        it is left out) and a dark bolt hole inside it.
    """
    f = canvas.fasteners
    ok = [i for i in range(len(f.shapes)) if i not in canvas.omitted] if f is not None else []
    if f is None or not ok:
        return []
    i = ok[int(rng.integers(len(ok)))]
    body_with, bolt_with = f.alphas(canvas.size, canvas.omitted)
    body_without, bolt_without = f.alphas(canvas.size, canvas.omitted | {i})
    zero = np.zeros(3, np.float32)
    changed = ((body_with != body_without) | (bolt_with != bolt_without)).astype(np.float32)
    footprint = _Mark(0, 0, changed, 1.0, zero, omits=i)
    box = footprint.box(canvas.size)
    if box is None or min(box[2] - box[0], box[3] - box[1]) < 7 * canvas.sc:  # mostly outside the image
        return []
    hole = (bolt_with - bolt_without) * np.float32(rng.uniform(0.5, 0.8))
    return [footprint, _Mark(0, 0, hole, rng.uniform(0.3, 0.55), zero)]


def _scratch(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """A long, thin, slightly curved bright (or dark) line."""
    sc, size = canvas.sc, canvas.size
    p0 = rng.uniform(0.05, 0.95, 2) * size
    ang, length = rng.uniform(0, np.pi * 2), rng.uniform(50, 220) * sc
    p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
    p1 = (p0 + p2) / 2 + rng.uniform(-0.15, 0.15) * length * np.array([-np.sin(ang), np.cos(ang)])
    u = np.linspace(0, 1, 40)[:, None]
    pts = (1 - u) ** 2 * p0 + 2 * u * (1 - u) * p1 + u * u * p2
    pen = _Pen(pts, 6 * sc)
    pen.polyline(pts, max(1, int(round(rng.uniform(1.0, 2.4) * sc))))
    if rng.random() < 0.7:
        mul, add = 0.0, _grey(rng.uniform(215, 255))
    else:
        mul, add = _dark(rng, 0.15, 0.4)
    return [pen.mark(rng.uniform(0, 0.6) * sc, rng.uniform(0.7, 0.95), mul, add)]


def _pit(rng: np.random.Generator, canvas: _Canvas) -> list[_Mark]:
    """A dark round pit with a bright rim on the side facing the light."""
    sc, size = canvas.sc, canvas.size
    r = rng.uniform(6, 12) * sc
    c = rng.uniform(r, size - r, 2)
    axes = (r, r * rng.uniform(0.75, 1.0))
    ang = rng.uniform(0, 180)
    core = _Pen([c], 2 * r)
    core.ellipse(c, axes, ang)
    rim = _Pen([c], 2 * r)
    light = rng.uniform(0, 2 * np.pi)
    rim.ellipse(c + 0.18 * r * np.array([np.cos(light), np.sin(light)]), (axes[0] * 1.1, axes[1] * 1.1), ang)
    rim.ellipse(c, axes, ang, value=0)
    sigma = rng.uniform(0.5, 1.2) * sc
    return [rim.mark(sigma, rng.uniform(0.45, 0.75), 0.0, _grey(rng.uniform(200, 245))),
            core.mark(sigma, rng.uniform(0.85, 0.98), *_dark(rng, 0.1, 0.3))]


_DEFECTS: dict[str, Callable[[np.random.Generator, _Canvas], list[_Mark]]] = {
    "crack": _crack,
    "squat": _squat,
    "missing_fastener": _missing_fastener,
    "scratch": _scratch,
    "pit": _pit,
}
