"""Where the line's images come from: a hot folder (`HotFolder`) or a video stream (`VideoStream`).

**Hot folder.** The camera software writes image files into a folder. A file is taken only when it is
complete: it has been seen twice with the same size and modification time, at least ``stable_ms`` apart,
and its modification time is at least ``stable_ms`` old, so a file still being written, or copied over a
slow share, is never read half-written; a file renamed in whole (the usual atomic hand-over) is taken
after one ``stable_ms`` (``stable_ms: 0`` takes files at first sight: only for writers that rename complete
files in). Hidden files, ``*.tmp``, ``*.part``, ``*.partial``, ``*~`` and names not matching
``patterns`` are ignored. Files are taken in arrival order (modification time, then name). Each file has
an ``image_key`` (source, name, size, modification time): the line records it with the part, so a file is
inspected once even if the process dies before moving it away; after its part is recorded the file is
moved (``after: move``, into ``done_dir``), deleted or kept. Thousands of files waiting at start-up are
listed once and taken in order.

**Video stream.** RTSP, HTTP or a file through OpenCV's FFmpeg backend; every ``stride``-th frame is
inspected; when the stream drops, it is reopened with exponential backoff (``reconnect_min_s`` doubling to
``reconnect_max_s``) and the source reports ``down`` with the reason meanwhile.

**Triggers.** A source with a ``trigger`` section has ``triggers`` (`edgevision.line.triggers.MqttTriggers`
or `edgevision.line.triggers.OpcUaTriggers`, set by the line): a folder file whose part id does not come from ``part_id_regex`` (none given, or no match)
takes the oldest waiting trigger's part id and serial; a video stream in ``mode: trigger`` inspects one frame
per trigger (the first read after it arrived; ``stride`` does not apply) and reads and discards the others,
in ``mode: stride`` an inspected frame takes a waiting trigger's part id.

Both produce `Item`s; `Source.status()` says ``up`` / ``down`` / ``finished`` and why.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.errors import ConfigError
from edgevision.line.config import FolderSource, VideoSource

if TYPE_CHECKING:
    from edgevision.line.triggers import Triggers

log = logging.getLogger(__name__)

__all__ = ["HotFolder", "Item", "SourceStatus", "VideoStream", "make_source", "part_id_from_name"]

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


@dataclass
class Item:
    """One image to inspect.

    Attributes:
        source: the source's name; name: the file name or ``SOURCE#frame``; path: the file (folder sources);
        data: the file's bytes (folder) or None; image: decoded pixels (video) or None; key: the exactly-once
        key (folder) or None; part_id / serial: from the name or a trigger; arrived: monotonic time taken.
        finish: called with True once the part is recorded (applies the folder's ``after`` policy).
    """

    source: str
    name: str
    path: Path | None = None
    data: bytes | None = None
    image: NDArray[np.uint8] | None = None
    key: str | None = None
    part_id: str | None = None
    serial: str | None = None
    arrived: float = field(default_factory=time.monotonic)
    finish: Callable[[bool], None] = lambda recorded: None

    def sha256(self) -> str:
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        if self.image is not None:
            return hashlib.sha256(np.ascontiguousarray(self.image).tobytes()).hexdigest()
        return ""


@dataclass
class SourceStatus:
    name: str
    kind: str
    state: str = "starting"
    detail: str = ""
    taken: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def part_id_from_name(name: str, pattern: re.Pattern[str] | None) -> tuple[str | None, str | None]:
    """``(part_id, serial)`` from a file name: the regex's group ``part`` (else its first group, else the whole
    match) and group ``serial``; without a regex the name without its extension; (None, None) when the regex
    does not match."""
    stem = Path(name).stem
    if pattern is None:
        return stem, None
    m = pattern.search(name)
    if m is None:
        return None, None
    groups = m.groupdict()
    part = groups.get("part") or (m.group(1) if m.re.groups else m.group(0))
    return part, groups.get("serial")


class HotFolder:
    """A hot folder (see the module doc). ``poll()`` returns the files that became complete, in order."""

    kind = "folder"

    def __init__(self, cfg: FolderSource, name: str) -> None:
        self.cfg, self.name = cfg, name
        self.path = Path(cfg.path)
        self.done_dir = Path(cfg.done_dir) if cfg.done_dir is not None else self.path / "done"
        try:
            self.pattern = re.compile(cfg.part_id_regex) if cfg.part_id_regex else None
        except re.error as e:
            raise ConfigError(f"sources.{name}.part_id_regex: not a valid regular expression ({e})") from None
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, monotonic first seen)
        self._taken: set[str] = set()  # names handed out and not finished
        self._finished: set[str] = set()  # keys finished with after=keep
        self._lock = threading.Lock()
        self.state = SourceStatus(name, self.kind)
        self.triggers: Triggers | None = None  # set by the line when the source has a trigger section

    def check(self) -> None:
        """Raises ConfigError when the folder is missing or the done folder cannot be made."""
        if not self.path.is_dir():
            raise ConfigError(f"sources.{self.name}.path: {self.path} is not a folder")
        if self.cfg.after == "move":
            try:
                self.done_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"sources.{self.name}.done_dir: cannot create {self.done_dir} ({e.strerror})") from None

    def _wanted(self, name: str) -> bool:
        if name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES):
            return False
        return any(fnmatch.fnmatch(name.lower(), p.lower()) for p in self.cfg.patterns)

    def poll(self, seen_before: Callable[[str], bool] = lambda key: False) -> list[Item]:
        """List the folder once; the complete files not handed out yet, oldest first.

        Args:
            seen_before: ``key -> True`` when the part of that file is already recorded (the file is then
                finished without inspection: a crash came between recording and moving it).
        """
        now_mono, now_wall = time.monotonic(), time.time_ns()
        stable_ns = self.cfg.stable_ms * 1_000_000
        ready: list[tuple[int, str, int]] = []
        present: set[str] = set()
        try:
            entries = list(os.scandir(self.path))
        except OSError as e:
            self.state.state, self.state.detail = "down", f"cannot list {self.path}: {e.strerror}"
            return []
        for entry in entries:
            name = entry.name
            if not self._wanted(name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished between listing and stat
            present.add(name)
            with self._lock:
                if name in self._taken:
                    continue
            sig = (st.st_size, st.st_mtime_ns)
            prev = self._seen.get(name)
            if stable_ns == 0 and st.st_size:  # the writer renames complete files in: take them at first sight
                ready.append((st.st_mtime_ns, name, st.st_size))
                continue
            if prev is None or prev[:2] != sig:
                self._seen[name] = (*sig, now_mono)
                continue
            if (now_mono - prev[2]) * 1e9 < stable_ns or now_wall - st.st_mtime_ns < stable_ns or st.st_size == 0:
                continue
            ready.append((st.st_mtime_ns, name, st.st_size))
        for gone in set(self._seen) - present:
            del self._seen[gone]
        self.state.state, self.state.detail = "up", f"watching {self.path}"
        items: list[Item] = []
        for mtime_ns, name, size in sorted(ready):
            key = f"{self.name}:{name}:{size}:{mtime_ns}"
            if key in self._finished:
                continue
            if seen_before(key):
                self._finish(name, key, True)
                continue
            path = self.path / name
            try:
                data = path.read_bytes()
            except OSError as e:
                log.warning("%s: cannot read %s (%s); retried on the next poll", self.name, path, e.strerror)
                continue
            if len(data) != size:
                continue  # changed under us: wait for it to settle again
            part, serial = part_id_from_name(name, self.pattern)
            if self.triggers is not None and (self.pattern is None or part is None):
                part, serial = self.triggers.take() or (part, serial)
            with self._lock:
                self._taken.add(name)
            self.state.taken += 1
            items.append(Item(self.name, name, path=path, data=data, key=key, part_id=part, serial=serial,
                              finish=functools.partial(self._finish, name, key)))
        return items

    def poll_pending(self) -> bool:
        """True while the folder holds a wanted file whose part is not recorded (or one is being inspected)."""
        with self._lock:
            if self._taken:
                return True
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return False
        for entry in entries:
            if not self._wanted(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if f"{self.name}:{entry.name}:{st.st_size}:{st.st_mtime_ns}" not in self._finished:
                return True
        return False

    def _finish(self, name: str, key: str, recorded: bool) -> None:
        """Apply the ``after`` policy to a file whose part is recorded (a failure is logged, never raised)."""
        path = self.path / name
        try:
            if recorded and self.cfg.after == "move":
                self.done_dir.mkdir(parents=True, exist_ok=True)
                target = self.done_dir / name
                if target.exists():
                    target = self.done_dir / f"{Path(name).stem}.{time.time_ns()}{Path(name).suffix}"
                try:
                    os.replace(path, target)
                except OSError:  # another filesystem
                    shutil.move(str(path), str(target))
            elif recorded and self.cfg.after == "delete":
                path.unlink(missing_ok=True)
            elif recorded:
                self._finished.add(key)
        except OSError as e:
            log.error("%s: cannot %s %s after its part was recorded (%s); it will not be inspected again",
                      self.name, self.cfg.after, path, e.strerror)
            self._finished.add(key)
        finally:
            with self._lock:
                self._taken.discard(name)
            self._seen.pop(name, None)

    def status(self) -> SourceStatus:
        return self.state

    def run(self, put: Callable[[Item], bool], stop: threading.Event,
            seen_before: Callable[[str], bool] = lambda key: False) -> None:
        """Poll until ``stop``; each item goes to ``put`` (which may block: back-pressure). Between polls the
        folder is watched (`edgevision.line.inotify.FolderWake`): a file renamed in is polled at once."""
        from edgevision.line.inotify import FolderWake

        wake = FolderWake(self.path)
        interval = self.cfg.poll_ms / 1000
        next_poll, woken = 0.0, False
        try:
            while not stop.is_set():
                if woken or time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + interval
                    for item in self.poll(seen_before):
                        if stop.is_set() or not put(item):
                            with self._lock:
                                self._taken.discard(item.name)
                            continue
                woken = wake.wait(min(max(next_poll - time.monotonic(), 0.0), 0.25))
        finally:
            wake.close()


class VideoStream:
    """A camera stream or video file (see the module doc)."""

    kind = "video"

    def __init__(self, cfg: VideoSource, name: str) -> None:
        self.cfg, self.name = cfg, name
        self.state = SourceStatus(name, self.kind)
        self.triggers: Triggers | None = None  # set by the line when the source has a trigger section

    def check(self) -> None:
        if "://" not in self.cfg.url and not Path(self.cfg.url).is_file():
            raise ConfigError(f"sources.{self.name}.url: {self.cfg.url} is neither a stream URL nor a file")

    def status(self) -> SourceStatus:
        return self.state

    def run(self, put: Callable[[Item], bool], stop: threading.Event,
            seen_before: Callable[[str], bool] = lambda key: False) -> None:
        import cv2

        backoff = self.cfg.reconnect_min_s
        index = 0
        is_file = "://" not in self.cfg.url
        while not stop.is_set():
            cap = cv2.VideoCapture(self.cfg.url, cv2.CAP_FFMPEG)
            if not cap.isOpened():
                cap.release()
                self.state.state, self.state.detail = "down", f"cannot open {self.cfg.url}; retrying in {backoff:g} s"
                log.warning("%s: %s", self.name, self.state.detail)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            self.state.state, self.state.detail = "up", f"reading {self.cfg.url}"
            backoff = self.cfg.reconnect_min_s
            frame_no = 0
            try:
                while not stop.is_set():
                    ok, frame = cap.read()
                    if not ok:
                        break
                    frame_no += 1
                    trigger = None
                    if self.cfg.mode == "trigger":
                        if self.triggers is None or (trigger := self.triggers.take()) is None:
                            continue  # no part in front of the camera: read (the stream stays live), discard
                    elif (frame_no - 1) % self.cfg.stride:
                        continue
                    elif self.triggers is not None:
                        trigger = self.triggers.take()
                    part, serial = trigger or (None, None)
                    index += 1
                    self.state.taken += 1
                    put(Item(self.name, f"{self.name}#{index:06d}", image=np.asarray(frame, dtype=np.uint8),
                             part_id=part, serial=serial))
            finally:
                cap.release()
            if is_file and not self.cfg.loop:
                self.state.state, self.state.detail = "finished", f"end of {self.cfg.url}"
                return
            if not stop.is_set():
                self.state.state, self.state.detail = "down", f"stream ended or dropped; reopening in {backoff:g} s"
                log.warning("%s: %s", self.name, self.state.detail)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)


def make_source(cfg: FolderSource | VideoSource, index: int) -> HotFolder | VideoStream:
    name = cfg.name or f"{cfg.type}{index}"
    return HotFolder(cfg, name) if isinstance(cfg, FolderSource) else VideoStream(cfg, name)
