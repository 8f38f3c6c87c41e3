"""File helpers every format shares: safe paths, atomic output, image lookup, strict parsing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from edgevision.core.errors import DatasetError, EdgeVisionError, OutputExistsError, OutputOverlapError
from edgevision.core.signals import interrupt_on_signals, raise_if_interrupted, signals_deferred

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""Image file extensions readers look for (compared lower-case)."""

ImageMode = Literal["copy", "symlink", "none"]


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def safe_relpath(name: str, where: str) -> str:
    """Normalize a file name from an annotation into a relative POSIX path inside the dataset.

    Backslashes (Windows tools) become slashes; ``./`` is dropped.

    Raises:
        DatasetError: for an absolute path, a drive letter or a ``..`` that escapes the root.
    """
    raw = name.strip().replace("\\", "/")
    if not raw:
        raise DatasetError("empty file name", where=where, code="path_empty")
    p = PurePosixPath(raw)
    if p.is_absolute() or (len(raw) > 1 and raw[1] == ":"):
        raise DatasetError(f"file name '{name}' is absolute; expected a path relative to the dataset root",
                           where=where, code="path_escape")
    parts: list[str] = []
    for part in p.parts:
        if part == "..":
            if not parts:
                raise DatasetError(f"file name '{name}' escapes the dataset root", where=where, code="path_escape")
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


def safe_join(root: Path, name: str, where: str) -> Path:
    """``root / name`` after `safe_relpath` (never outside ``root``)."""
    return root / safe_relpath(name, where)


class ImageIndex:
    """Finds image files in a folder tree by name, forgiving the quirks of real annotation files.

    Lookup order: exact relative path; same name in any indexed folder; case-insensitive name;
    same stem with any image extension (a VOC ``<filename>`` without ``.jpg``, or ``.JPG`` vs
    ``.jpg``). Ambiguous matches are not guessed.
    """

    def __init__(self, *roots: Path) -> None:
        self.roots = [r for r in roots if r.is_dir()]
        self._by_name: dict[str, list[Path]] = {}
        self._by_lower: dict[str, list[Path]] = {}
        self._by_stem: dict[str, list[Path]] = {}
        for root in self.roots:
            for p in sorted(root.rglob("*")):
                if p.is_file() and is_image(p):
                    self._by_name.setdefault(p.name, []).append(p)
                    self._by_lower.setdefault(p.name.lower(), []).append(p)
                    self._by_stem.setdefault(p.stem.lower(), []).append(p)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())

    def all(self) -> list[Path]:
        return sorted(p for v in self._by_name.values() for p in v)

    def find(self, name: str) -> Path | None:
        rel = name.replace("\\", "/")
        for root in self.roots:
            p = root / rel
            if p.is_file():
                return p
        base = PurePosixPath(rel).name
        for table, key in ((self._by_name, base), (self._by_lower, base.lower()),
                           (self._by_stem, PurePosixPath(base).stem.lower() if is_image(Path(base)) else base.lower())):
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                return None
        return None


def read_image_size(path: Path, where: str | None = None) -> tuple[int, int]:
    """Image ``(height, width)`` from the file header, without decoding the pixels: `edgevision.core.safeload.
    image_size`, the readers' bounded header read (a header declaring a decompression bomb is
    ``image_too_large``, not an unhandled Pillow error).

    The stored size is returned (EXIF orientation is not applied; `validate` reports it).

    Raises:
        DatasetError: when the file is missing, is not a readable image or declares too many pixels.
    """
    from edgevision.core.safeload import image_size

    return image_size(Path(path), where)


def load_json(path: Path) -> Any:
    """Parse a JSON file; a truncated or malformed file gives a one-line `DatasetError`."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError("file not found", where=str(path), code="file_missing") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
                           where=str(path), code="json_malformed") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"not UTF-8 text: {e.reason}", where=str(path), code="json_malformed") from e


def parse_xml(path: Path) -> Any:
    """Parse an XML file with defusedxml (no entity expansion, no external entities).

    Returns:
        The root ``Element``.

    Raises:
        DatasetError: for a missing, truncated, malformed or unsafe file.
    """
    import xml.etree.ElementTree as ET

    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        return DET.parse(str(path), forbid_dtd=False).getroot()
    except FileNotFoundError:
        raise DatasetError("file not found", where=str(path), code="file_missing") from None
    except DefusedXmlException as e:
        raise DatasetError(f"unsafe XML refused ({e.__class__.__name__})", where=str(path), code="xml_unsafe") from e
    except ET.ParseError as e:
        raise DatasetError(f"malformed XML: {e}", where=str(path), code="xml_malformed") from e


def place_image(src: Path | None, dst: Path, mode: ImageMode) -> bool:
    """Copy or symlink an image into an output dataset.

    Returns:
        True when a file was placed; False for ``mode="none"`` or a missing source.
    """
    if mode == "none" or src is None or not src.is_file():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copyfile(src, dst)
    elif mode == "symlink":
        os.symlink(src.resolve(), dst)
    else:
        raise EdgeVisionError(f"--images: expected copy, symlink or none, got '{mode}'")
    return True


def _path_forms(path: Path | str, folder: bool) -> set[Path]:
    """``path`` as written (absolute, ``..`` folded) and as the file system resolves it (symlinks
    followed); with ``folder`` False, a file stands for the folder that holds it."""
    p = os.path.expanduser(os.fspath(path))
    forms = {os.path.normpath(os.path.abspath(p)), os.path.realpath(p)}
    if not folder:
        forms = {f if os.path.isdir(f) or not os.path.lexists(f) else os.path.dirname(f) for f in forms}
    return {Path(os.path.normcase(f)) for f in forms}


def output_overlap(out: Path | str, sources: Iterable[Path | str], *, inside: bool = True) -> tuple[str, Path] | None:
    """How ``out`` collides with the folders ``sources`` are read from, or None when it does not.

    A source file stands for its folder. Both sides are compared as written (``..`` folded) and
    resolved (symlinks followed), so neither a relative path nor a link gets past. Of several
    collisions the closest is named: the same folder, else the innermost folder ``out`` lies in,
    else the outermost folder it contains. With ``inside`` False, lying inside a source folder is
    not a collision.

    Returns:
        ``("is", folder)``, ``("is inside", folder)`` or ``("contains", folder)``.
    """
    outs = _path_forms(out, folder=True)
    hits: list[tuple[int, int, str, Path]] = []
    for folder in {f for src in set(sources) for f in _path_forms(src, folder=False)}:
        for o in outs:
            if o == folder:
                hits.append((0, 0, "is", folder))
            elif inside and folder in o.parents:
                hits.append((1, -len(folder.parts), "is inside", folder))
            elif o in folder.parents:
                hits.append((2, len(folder.parts), "contains", folder))
    if not hits:
        return None
    _, _, relation, folder = min(hits, key=lambda h: (h[0], h[1], str(h[3])))
    return relation, folder


def check_output_clear(out: Path | str, sources: Iterable[Path | str], *, what: str = "output",
                       inside: bool = True) -> None:
    """Refuse an output that is, lies inside, or contains a folder the input is read from.

    The rule for every command that writes from a dataset (``sources``: the annotation files, list
    files, image folders and roots it was read from, see `edgevision.convert.source_paths`):
    writing inside the input changes it, and replacing an output that is or contains it
    (``--overwrite``) deletes it. Checked before anything is written. ``inside`` False allows an
    output inside a source folder (predictions beside the one image they were made from).

    Raises:
        OutputOverlapError: one line naming the output, the source folder and the fix.
    """
    hit = output_overlap(out, sources, inside=inside)
    if hit is None:
        return
    relation, folder = hit
    fix = "choose an output that does not contain it" if relation == "contains" else "choose an output outside it"
    raise OutputOverlapError(f"{out}: {what} must not be the source or inside it, nor contain it: it {relation} "
                             f"{folder}, which the dataset is read from (the source is never modified); {fix}")


@contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A scratch folder in ``parent`` (for work that precedes an atomic write), always removed afterwards.

    Creation and removal run with signals deferred (`signals_deferred`), so a SIGINT / SIGTERM / SIGHUP
    that lands just as the folder appears cannot leave it behind (`tempfile.TemporaryDirectory` has that
    window between creating the folder and entering its block).
    """
    with signals_deferred():
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield tmp
    finally:
        with signals_deferred():
            _remove_tree(tmp)


def _remove_tree(path: Path, attempts: int = 20) -> None:
    """``rmtree`` that also outlasts a thread still finishing a write into the folder (a file created during the
    walk makes the last ``rmdir`` fail): retried for up to about 2 s."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.1)
    log.warning("%s: could not remove the scratch folder; delete it by hand", path)


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False, *, protect: Iterable[Path | str] = ()) -> Iterator[Path]:
    """Yield a temporary folder next to ``out``; on success it becomes ``out``, on failure it vanishes.

    SIGINT, SIGTERM and SIGHUP count as failures: they raise `Interrupted` (see
    `edgevision.core.signals`), the temporary folder is removed, and the renames that put the
    finished folder in place are never cut in half.

    Args:
        out: the output folder.
        overwrite: replace ``out`` when it exists.
        protect: the files and folders the output is made from (see `check_output_clear`).

    Raises:
        OutputOverlapError: ``out`` is, lies inside or contains a folder of ``protect`` (checked first).
        OutputExistsError: when ``out`` exists and ``overwrite`` is False.
    """
    out = Path(out)
    check_output_clear(out, protect)
    if os.path.lexists(out) and not overwrite:
        raise OutputExistsError(f"{out}: output already exists; choose another path or pass --overwrite")
    with interrupt_on_signals():
        tmp: Path | None = None
        try:
            with signals_deferred():
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
            yield tmp
            raise_if_interrupted()
            with signals_deferred():
                _replace(tmp, out)
        except BaseException:
            if tmp is not None:
                with signals_deferred():
                    shutil.rmtree(tmp, ignore_errors=True)
            raise


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` at ``out``; an existing ``out`` (a link: the link itself) is removed."""
    if not os.path.lexists(out):
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def check_output_path(src: Path | str, dst: Path | str, overwrite: bool = False) -> None:
    """Refuse an output that is the source, lies inside it or contains it, or exists (unless ``overwrite``).

    The check commands make before reading: ``src`` may be a file (its folder is the source root).
    Once the dataset is read, `check_output_clear` with everything it was read from (image folders
    elsewhere, list files) follows, through `atomic_dir`'s ``protect``.

    Raises:
        OutputOverlapError: ``dst`` overlaps the source (checked first: --overwrite would not help).
        OutputExistsError: ``dst`` exists and ``overwrite`` is False.
    """
    dst = Path(dst)
    check_output_clear(dst, [src])
    if os.path.lexists(dst) and not overwrite:
        raise OutputExistsError(f"{dst}: output already exists; choose another path or pass --overwrite")


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (model weights run to hundreds of MB)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def edgevision_home() -> Path:
    """EdgeVision's local state: ``$EDGEVISION_HOME``, else ``~/.cache/edgevision``.

    Holds the weights registry, the cached training datasets and Ultralytics' settings, so that
    nothing is written to ``~/.config`` and a factory PC can keep it on a data disk.
    """
    env = os.environ.get("EDGEVISION_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgevision"


def write_atomic(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed into place.

    A reader (or a crash) never sees a half-written file; the folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with interrupt_on_signals():  # SIGTERM / SIGHUP remove the temporary file too
        tmp: str | None = None
        try:
            with signals_deferred():
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            raise_if_interrupted()
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
    return path


def copy_atomic(src: Path | str, dst: Path | str) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file renamed into place (see `write_atomic`)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with interrupt_on_signals():  # SIGTERM / SIGHUP remove the temporary file too
        tmp: str | None = None
        try:
            with signals_deferred():
                fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
                os.close(fd)
            shutil.copyfile(src, tmp)
            raise_if_interrupted()
            os.replace(tmp, dst)
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
    return dst
