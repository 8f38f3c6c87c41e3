"""A folder watch that wakes the hot-folder poll as soon as a file is renamed in or closed after writing:
Linux inotify through ctypes (no dependency). Elsewhere, or where the kernel refuses, `FolderWake` just waits
for the poll interval; the poll itself always runs too, because network shares (SMB / NFS) deliver no
inotify events for files written by other machines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import sys
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["FolderWake"]

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


class FolderWake:
    """``wait(timeout)`` returns early (True) when a file is written or renamed into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.fd: int | None = None
        if not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            wd = libc.inotify_add_watch(fd, os.fsencode(str(folder)), IN_CLOSE_WRITE | IN_MOVED_TO)
            if wd < 0:
                os.close(fd)
                raise OSError(ctypes.get_errno(), "inotify_add_watch")
            self.fd = fd
        except (OSError, AttributeError) as e:
            log.info("%s: no inotify (%s); polling only", folder, e)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when a file event came (the events are drained)."""
        if self.fd is None:
            import time

            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
