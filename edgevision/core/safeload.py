"""Bounded parsing of untrusted files: JSON, YAML and image headers.

Every file a user hands EdgeVision (annotation JSON, dataset and configuration YAML, images named
or embedded by annotations) is parsed here, so that a broken or hostile file costs bounded time and
memory and fails with one line naming the file and the place, never a traceback:

* JSON: nesting deeper than `MAX_JSON_DEPTH` is refused before parsing (a cheap scan over the
  brackets); integers beyond Python's digit limit, recursion and encoding errors are one-line
  `DatasetError` s (code ``json_malformed``) with the line and column where known.
* YAML: one `yaml.SafeLoader` subclass caps the file size (`MAX_YAML_BYTES`), the nesting
  (`MAX_YAML_DEPTH`), the number of aliases (`MAX_YAML_ALIASES`) and the number of nodes once
  aliases are expanded (`MAX_YAML_NODES`): a 300-byte "billion laughs" file is refused in
  milliseconds instead of expanding to gigabytes. Recursive aliases are refused too.
* Image headers: the size is read without decoding the pixels; an image larger than
  `MAX_IMAGE_PIXELS` (Pillow's decompression-bomb limit) or with an unreadable header is a one-line
  error, whether the image is a file or bytes embedded in an annotation.

Unreadable files (permissions) become `FileAccessError` with the file name.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from edgevision.core.errors import ConfigError, DatasetError, FileAccessError, short_text

MAX_JSON_DEPTH = 100
"""Deepest nesting of lists and objects a JSON file may have (COCO and LabelMe need 5)."""
MAX_YAML_BYTES = 8 << 20
"""Largest YAML file read (8 MiB; configurations and dataset descriptions are a few kB)."""
MAX_YAML_DEPTH = 50
"""Deepest nesting of lists and mappings in a YAML document."""
MAX_YAML_ALIASES = 1000
"""Most aliases (``*name``) in a YAML document."""
MAX_YAML_NODES = 1_000_000
"""Most nodes a YAML document may hold once every alias is expanded (the alias-bomb guard)."""
MAX_IMAGE_PIXELS = 2 * 89_478_485
"""Largest image (width x height) read: Pillow's default decompression-bomb limit, which it refuses to open."""

_JSON_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_JSON_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_MAX_INT_DIGITS = 4300  # Python's int_max_str_digits default
_LONG_DIGITS = re.compile(rf"\d{{{_MAX_INT_DIGITS + 1},}}")


# -- JSON --------------------------------------------------------------------------------------
def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[]`` / ``{}`` in JSON text (brackets inside strings do not count).

    Vectorized over the structural characters only (a 100 MB COCO file in about 0.2 s), so it can run
    before `json.loads`, whose C parser would otherwise recurse as deep as the file asks.
    """
    if b"\\" in data:
        data = _JSON_ESCAPE.sub(b"", data)  # an escaped quote is no string boundary
    chars = np.frombuffer(data.translate(None, _JSON_NOT_STRUCTURE), dtype=np.uint8)
    if not len(chars):
        return 0
    outside = (np.cumsum(chars == ord('"'), dtype=np.int64) & 1) == 0
    step = np.zeros(len(chars), dtype=np.int8)
    step[(chars == ord("[")) | (chars == ord("{"))] = 1
    step[(chars == ord("]")) | (chars == ord("}"))] = -1
    step[~outside] = 0
    return int(np.cumsum(step, dtype=np.int64).max())


def load_json(path: Path | str) -> Any:
    """Parse a JSON file with bounded nesting; any problem is a one-line `DatasetError` naming the file.

    Raises:
        DatasetError: missing (``file_missing``), unreadable (`FileAccessError`), malformed, too
            deeply nested or holding an integer beyond Python's digit limit (``json_malformed``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError("file not found", where=str(path), code="file_missing") from None
    except OSError as e:
        raise FileAccessError.from_os_error(e, path) from e
    return loads_json(data, str(path))


def loads_json(data: bytes | str, where: str) -> Any:
    """Parse JSON text (bytes are UTF-8, a BOM is skipped) with bounded nesting; see `load_json`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        _json_error(where, f"lists/objects nested {depth} levels deep; expected at most {MAX_JSON_DEPTH}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _json_error(where, f"not UTF-8 text: {e.reason} at byte {e.start}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        _json_error(where, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}")
    except RecursionError:
        _json_error(where, f"lists/objects nested too deeply; expected at most {MAX_JSON_DEPTH} levels")
    except ValueError as e:  # an integer beyond Python's digit limit (4,300 digits)
        m = _LONG_DIGITS.search(text)
        if m is None:
            _json_error(where, f"malformed JSON: {short_text(str(e), 120)}")
        line = text.count("\n", 0, m.start()) + 1
        _json_error(where, f"number at line {line} has {len(m.group()):,} digits; expected at most "
                           f"{_MAX_INT_DIGITS:,} (an integer this long cannot be converted)")


def _json_error(where: str, message: str) -> NoReturn:
    raise DatasetError(message, where=where, code="json_malformed")


# -- YAML --------------------------------------------------------------------------------------
class YamlRefused(ValueError):
    """A YAML document the bounded loader will not build; ``mark`` is where (or None)."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.mark = mark


def _bounded_loader() -> type:
    """The `yaml.SafeLoader` subclass (built on first use: PyYAML is imported lazily)."""
    import yaml
    from yaml.constructor import ConstructorError

    class BoundedSafeLoader(yaml.SafeLoader):
        """`yaml.SafeLoader` with caps on nesting, aliases and expanded size (see the module docstring)."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._aliases = 0
            self._depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self._aliases += 1
                if self._aliases > MAX_YAML_ALIASES:
                    raise YamlRefused(f"more than {MAX_YAML_ALIASES} aliases (*name)", self.peek_event().start_mark)
                return super().compose_node(parent, index)
            self._depth += 1
            try:
                if self._depth > MAX_YAML_DEPTH:
                    raise YamlRefused(f"lists/mappings nested more than {MAX_YAML_DEPTH} levels deep",
                                      self.peek_event().start_mark)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                _check_expanded_size(node)
            return node

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, OverflowError) as e:  # a 5,000-digit integer, a date like 2024-13-45
                raise ConstructorError(None, None, f"value not readable ({short_text(str(e), 80)})",
                                       node.start_mark) from e

    return BoundedSafeLoader


def _check_expanded_size(root: Any) -> None:
    """Refuse a node graph that expands (through aliases) to more than `MAX_YAML_NODES` nodes, or is cyclic.

    Counts without expanding: each distinct node once, its expanded size memoized.
    """
    from yaml.nodes import MappingNode, SequenceNode

    def children(node: Any) -> list[Any]:
        if isinstance(node, SequenceNode):
            return list(node.value)
        if isinstance(node, MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise YamlRefused(f"aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)",
                                  node.start_mark)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlRefused("an alias refers to a list or mapping that contains it (recursive alias)",
                              node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)


def _yaml_problem(what: str, e: Exception) -> str:
    """``<what> at line L column C: <problem>`` for a YAML error, short and on one line."""
    mark = getattr(e, "mark", None) or getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    return f"{what}{at}: {short_text(str(problem), 160)}"


def loads_yaml(text: str, where: str, *, dataset: bool = False) -> Any:
    """Parse YAML text with `yaml.safe_load` semantics and the bounds of this module.

    Args:
        where: what the text is, for messages (a file name, ``--option key``).
        dataset: raise `DatasetError` (code ``yaml_malformed``) instead of `ConfigError`.

    Raises:
        ConfigError | DatasetError: malformed YAML (with line and column), or a document over a bound.
    """
    import yaml

    if len(text) > MAX_YAML_BYTES:
        _yaml_error(where, f"{len(text):,} characters; expected at most {MAX_YAML_BYTES:,}", dataset)
    loader = _bounded_loader()(text)
    try:
        return loader.get_single_data()
    except YamlRefused as e:
        _yaml_error(where, _yaml_problem("YAML refused", e), dataset)
    except yaml.YAMLError as e:
        _yaml_error(where, _yaml_problem("malformed YAML", e), dataset)
    except RecursionError:
        _yaml_error(where, f"refused: nested more than {MAX_YAML_DEPTH} levels deep", dataset)
    finally:
        loader.dispose()


def load_yaml(path: Path | str, what: str = "YAML file", *, dataset: bool = False) -> Any:
    """Read and parse a YAML file (UTF-8, BOM allowed) with the bounds of this module; see `loads_yaml`.

    Args:
        what: what the file holds, for messages (``recipe``, ``gate``, ``dataset yaml``).

    Raises:
        ConfigError | DatasetError: missing, unreadable, too large, not UTF-8, malformed or over a bound.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            _yaml_error(str(path), f"{what} is {size:,} bytes; expected at most {MAX_YAML_BYTES:,}", dataset)
        raw = path.read_bytes()
    except FileNotFoundError:
        _yaml_error(str(path), f"cannot read {what} (file not found)", dataset, code="file_missing")
    except OSError as e:
        if dataset:
            raise FileAccessError.from_os_error(e, path) from e
        raise ConfigError(f"{path}: cannot read {what} ({(e.strerror or e.__class__.__name__).lower()}); "
                          "check the path and its permissions") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        _yaml_error(str(path), f"{what} is not UTF-8 text: {e.reason} at byte {e.start}", dataset)
    return loads_yaml(text, str(path), dataset=dataset)


def _yaml_error(where: str, message: str, dataset: bool, code: str = "yaml_malformed") -> NoReturn:
    if dataset:
        raise DatasetError(message, where=where, code=code)
    raise ConfigError(f"{where}: {message}")


# -- image headers -----------------------------------------------------------------------------
def check_image_size(h: int, w: int, where: str, what: str = "image") -> tuple[int, int]:
    """``(h, w)`` when both are at least 1 and ``h * w`` is at most `MAX_IMAGE_PIXELS`.

    Raises:
        DatasetError: ``image_too_large`` or ``image_corrupt`` (a zero side).
    """
    if h < 1 or w < 1:
        raise DatasetError(f"{what} is {w}x{h} (WxH); expected at least 1x1", where=where, code="image_corrupt")
    if h * w > MAX_IMAGE_PIXELS:
        raise DatasetError(f"{what} is {w}x{h} (WxH) = {h * w:,} pixels; expected at most {MAX_IMAGE_PIXELS:,} "
                           "(a larger image cannot be decoded safely; tile or downscale it)",
                           where=where, code="image_too_large")
    return h, w


def image_size(source: Path | bytes, where: str | None = None, what: str = "image") -> tuple[int, int]:
    """An image's ``(height, width)`` from its header, without decoding the pixels, within the bounds.

    Args:
        source: an image file, or the bytes of an image (one embedded in an annotation file).
        where: file and item for messages (default: the file).

    Raises:
        DatasetError: ``image_missing``, ``image_corrupt`` (unreadable header), ``image_too_large``;
            `FileAccessError` (``image_unreadable``) when the file may not be read.
    """
    from PIL import Image

    at = where or (str(source) if isinstance(source, Path) else "embedded image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as im:
                w, h = im.size
        except FileNotFoundError:
            raise DatasetError(f"image file not found: {str(source)}", where=at, code="image_missing") from None
        except PermissionError as e:
            err = FileAccessError.from_os_error(e, source)
            err.code = "image_unreadable"  # `edgevision.data.validate`'s code for an image it may not read
            raise err from e
        except Image.DecompressionBombError as e:
            n = re.search(r"\((\d{1,30}) pixels\)", str(e))
            size = f"{int(n.group(1)):,}" if n else f"more than {MAX_IMAGE_PIXELS:,}"
            raise DatasetError(f"{what} header declares {size} pixels; expected at most {MAX_IMAGE_PIXELS:,} "
                               "(a larger image cannot be decoded safely; tile or downscale it)",
                               where=at, code="image_too_large") from e
        except Exception as e:  # noqa: BLE001 - any failure of a third-party parser on untrusted bytes
            # (UnidentifiedImageError, OSError, SyntaxError, struct.error, ... and ImportError: Ultralytics,
            # once imported, patches Image.open to fetch a HEIF plugin, which fails offline)
            raise DatasetError(f"{what} is not readable ({e.__class__.__name__})", where=at,
                               code="image_corrupt") from e
    return check_image_size(int(h), int(w), at, what)
