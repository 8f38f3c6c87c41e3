"""Signals as exceptions, so that temporary output is removed on SIGINT, SIGTERM and SIGHUP.

Left to their default action, SIGTERM (a service manager's stop, ``kill``) and SIGHUP (a closed
terminal or SSH session) end the process at once: no ``finally`` runs and an atomic writer's
temporary folder stays behind. Inside `interrupt_on_signals` the three signals raise
`edgevision.core.errors.Interrupted` instead, so the stack unwinds and every cleanup runs;
`signals_deferred` holds a signal back during the few steps that must not be cut in half (the
renames that put a finished output in place, the removal of a temporary one) and raises it right
after them.

A raised signal can be lost on its way: Python prints and ignores an exception raised inside a weakref
callback or a ``__del__`` method (an import's module-lock callback, a file object being collected), and the
signal handler runs wherever the main thread happens to be. `raise_if_interrupted`, called where a finished output
is put in place, raises the signal again when that happened, so no output is committed after a signal.

Handlers can only be set in the main thread: elsewhere both context managers do nothing. Only a
signal whose handler is still Python's default is taken over; an ignored one (``nohup`` ignores
SIGHUP) or an application's own handler (``edgevision serve`` drains on SIGTERM) is left alone.
Forked children get the default actions back.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import TypeVar

from edgevision.core.errors import Interrupted

_A = TypeVar("_A")
_R = TypeVar("_R")

HANDLED_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals `interrupt_on_signals` turns into `Interrupted` (SIGHUP does not exist on Windows)."""

_DEFAULTS = (signal.SIG_DFL, signal.default_int_handler)
_defer_depth = 0
_pending: int | None = None
_raised: int | None = None  # the signal `_raise` last raised, until the outermost block ends


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise(signum: int, frame: FrameType | None) -> None:
    global _pending, _raised
    if _defer_depth:
        if _pending is None:
            _pending = signum
        return
    _raised = signum
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` again for a signal raised as one whose exception was lost (see the module doc).

    Call it right before an output is put in place. While an exception is on its way (the unwinding that a signal
    starts, with its cleanup) nothing is raised, so cleanup code may call it too. A no-op outside the main thread
    and when no signal was raised in the current `interrupt_on_signals` block.
    """
    if _raised is not None and sys.exc_info()[1] is None and _in_main_thread():
        raise Interrupted(_raised)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise `Interrupted` (a `KeyboardInterrupt`).

    Nests freely (an inner block finds the handlers in place and changes nothing); the previous
    handlers are restored on exit. A no-op outside the main thread.
    """
    global _raised
    previous: dict[int, signal.Handlers | object] = {}
    if _in_main_thread():
        for sig in HANDLED_SIGNALS:
            current = signal.getsignal(sig)
            if any(current is d for d in _DEFAULTS):  # identity: a handler object may not be hashable
                try:
                    signal.signal(sig, _raise)
                except ValueError:  # not the main interpreter
                    break
                previous[sig] = current
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        if previous:  # the outermost block: a signal raised in it is over
            _raised = None


class signals_deferred:  # noqa: N801 - used like a function: ``with signals_deferred():``
    """Hold back a signal that `interrupt_on_signals` would raise until the block ends, then raise it.

    For steps that must complete once started. When the block raises, an `Interrupted` propagates
    unchanged and any other exception gives way to the pending `Interrupted`, chained to it. A no-op
    outside the main thread (signal handlers run in the main thread only).
    """

    def __enter__(self) -> None:
        global _defer_depth
        self._active = _in_main_thread()
        if self._active:
            _defer_depth += 1

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        global _defer_depth, _pending
        if not self._active:
            return
        _defer_depth -= 1
        if _defer_depth or _pending is None:
            return
        signum, _pending = _pending, None
        if isinstance(exc, Interrupted):
            return
        raise Interrupted(signum) from exc


def _defaults_in_child() -> None:
    global _defer_depth, _pending, _raised
    _defer_depth, _pending, _raised = 0, None, None
    for sig in HANDLED_SIGNALS:
        if signal.getsignal(sig) is _raise:
            with contextlib.suppress(ValueError):  # the forking thread is the child's main thread
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_defaults_in_child)


def interruption(exc: BaseException | None) -> Interrupted | None:
    """The `Interrupted` that ``exc`` is or was raised from (typer turns one into ``Exit(130)``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Interrupted):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def map_interruptibly(pool: concurrent.futures.Executor, fn: Callable[[_A], _R], items: Iterable[_A], *,
                      window: int = 64) -> Iterator[_R]:
    """``pool.map(fn, items)``, in order, safe to interrupt with SIGINT / SIGTERM / SIGHUP.

    `Interrupted` raised by the signal handler in the middle of `concurrent.futures`' waiting (inside a
    `threading.Condition`) can leave its lock half released and hang the executor's shutdown that follows. Here
    the main thread waits in 0.1 s slices with signals deferred (`signals_deferred`), so the signal is raised
    between slices; at most ``window`` items are submitted ahead, and those not started are cancelled when the
    generator ends early.
    """
    it = iter(items)
    pending: collections.deque[concurrent.futures.Future[_R]] = collections.deque(
        pool.submit(fn, x) for x in itertools.islice(it, window))
    try:
        while pending:
            f = pending[0]
            while True:
                with signals_deferred():
                    done, _ = concurrent.futures.wait([f], timeout=0.1)
                if done:
                    break
            pending.popleft()
            pending.extend(pool.submit(fn, x) for x in itertools.islice(it, 1))
            yield f.result()
    finally:
        for f in pending:
            f.cancel()
