"""`output_overlap` / `check_output_clear` (no output over its source) and signals as exceptions in
`atomic_dir` and `write_atomic` (no partial output on SIGINT / SIGTERM / SIGHUP)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from edgevision.core.errors import Interrupted, OutputExistsError, OutputOverlapError
from edgevision.core.io import atomic_dir, check_output_clear, output_overlap, write_atomic
from edgevision.core.signals import interrupt_on_signals, interruption, signals_deferred

posix_only = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals and symlinks")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """``data/ann/a.json`` and ``data/images/train/x.png``."""
    (tmp_path / "data" / "ann").mkdir(parents=True)
    (tmp_path / "data" / "ann" / "a.json").write_text("{}")
    (tmp_path / "data" / "images" / "train").mkdir(parents=True)
    (tmp_path / "data" / "images" / "train" / "x.png").write_bytes(b"png")
    return tmp_path / "data"


def test_overlap_relations_name_the_closest_folder(src: Path, tmp_path: Path) -> None:
    images = src / "images" / "train"
    sources = [src / "ann" / "a.json", images / "x.png", src]  # a file stands for its folder
    assert output_overlap(images, sources) == ("is", images)
    assert output_overlap(images / "out", sources) == ("is inside", images)  # the innermost
    assert output_overlap(src / "new", sources) == ("is inside", src)
    assert output_overlap(tmp_path, sources) == ("contains", src)  # the outermost
    assert output_overlap(tmp_path / "out", sources) is None
    assert output_overlap(tmp_path / "data-out", sources) is None  # a shared prefix is not a parent
    assert output_overlap(src / "ann" / "a.json", [src / "ann" / "a.json"]) == ("is inside", src / "ann")


@posix_only
def test_relative_and_symlinked_paths_do_not_get_past(src: Path, tmp_path: Path, monkeypatch) -> None:
    images = src / "images" / "train"
    (tmp_path / "link").symlink_to(src / "images")
    (tmp_path / "out-link").symlink_to(images)
    (tmp_path / "src-link").symlink_to(src)
    assert output_overlap(tmp_path / "link" / "train", [images]) == ("is", images)
    assert output_overlap(tmp_path / "out-link", [images]) == ("is", images)
    assert output_overlap(images, [tmp_path / "src-link" / "images" / "train" / "x.png"]) == ("is", images)
    monkeypatch.chdir(src / "ann")
    assert output_overlap("../images/val/../train", ["a.json", images]) == ("is", images)
    assert output_overlap("..", ["a.json"]) == ("contains", src / "ann")
    with pytest.raises(OutputOverlapError) as e:
        check_output_clear("../images/train", [images / "x.png"], what="--out")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("../images/train: --out must not be the source or inside it")
    assert f"it is {images}, which the dataset is read from" in msg and msg.endswith("choose an output outside it")


def test_atomic_dir_refuses_an_overlap_before_touching_anything(src: Path) -> None:
    out = src / "images" / "train" / "new" / "deeper"
    before = sorted(src.rglob("*"))
    with pytest.raises(OutputOverlapError, match="is inside"), atomic_dir(out, protect=[src / "images" / "train"]):
        pytest.fail("the body must not run")
    assert sorted(src.rglob("*")) == before
    images = src / "images" / "train"
    # checked before 'exists': --overwrite would not help
    with pytest.raises(OutputOverlapError, match="it is"), atomic_dir(images, protect=[images / "x.png"]):
        pass
    with pytest.raises(OutputExistsError), atomic_dir(src / "ann", protect=[images]):
        pass
    assert (src / "images" / "train" / "x.png").read_bytes() == b"png"


@posix_only
def test_atomic_dir_replaces_a_symlinked_output_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("k")
    (tmp_path / "out").symlink_to(target)
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("n")
    assert not (tmp_path / "out").is_symlink() and (tmp_path / "out" / "new.txt").read_text() == "n"
    assert (target / "keep.txt").read_text() == "k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "target"], "old link left behind"


# -- signals -----------------------------------------------------------------------------------------------------
@pytest.fixture
def default_sigterm() -> None:
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler in this process")


def _raise_sigterm() -> None:
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "no handler: the signal would end pytest"
    signal.raise_signal(signal.SIGTERM)


def test_sigterm_in_atomic_dir_removes_the_temporary_folder(tmp_path: Path, default_sigterm: None) -> None:
    out = tmp_path / "out"
    with pytest.raises(Interrupted) as e, atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("x")
        _raise_sigterm()
        pytest.fail("the signal did not interrupt")
    assert e.value.signum == signal.SIGTERM and e.value.exit_code == 143 and str(e.value) == "interrupted by SIGTERM"
    assert isinstance(e.value, KeyboardInterrupt)  # code that stops cleanly on Ctrl-C does the same on SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "previous handler not restored"


def test_sigterm_in_write_atomic_removes_the_temporary_file(tmp_path: Path, default_sigterm: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def replace_then_signal(a: str, b: str) -> None:
        _raise_sigterm()
        real_replace(a, b)

    monkeypatch.setattr("edgevision.core.io.os.replace", replace_then_signal)
    with pytest.raises(Interrupted):
        write_atomic(tmp_path / "f.json", "{}")
    assert list(tmp_path.iterdir()) == []


class _SignalInDel:
    """Raises SIGTERM from ``__del__``: the handler's `Interrupted` is printed and ignored by Python, lost (as in an
    import's weakref callback, which fresh-clone CI caught: synth then finished and wrote its output, exit 0)."""

    def __del__(self) -> None:
        _raise_sigterm()


def test_a_signal_whose_exception_was_lost_still_stops_the_commit(tmp_path: Path, default_sigterm: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    lost: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: lost.append(u.exc_value))  # where Python puts them
    out = tmp_path / "out"
    with pytest.raises(Interrupted) as e, atomic_dir(out) as tmp:
        (tmp / "whole.txt").write_text("x")
        _SignalInDel()  # collected at once: the signal arrives, its exception goes nowhere
        reached = True  # the block ran to its end
    assert reached and isinstance(lost[0], Interrupted)  # the exception really was lost ...
    assert e.value.signum == signal.SIGTERM  # ... and the commit raised it again
    assert list(tmp_path.iterdir()) == [], "output committed after a signal"
    with pytest.raises(Interrupted), interrupt_on_signals():  # write_atomic too
        _SignalInDel()
        write_atomic(tmp_path / "f.json", "{}")
    assert list(tmp_path.iterdir()) == []
    write_atomic(tmp_path / "g.json", "{}")  # the block is over: nothing pending for the next output
    assert (tmp_path / "g.json").read_text() == "{}"


def test_deferred_signals_arrive_after_the_block(default_sigterm: None) -> None:
    done = []
    with pytest.raises(Interrupted), interrupt_on_signals():
        with signals_deferred():
            _raise_sigterm()
            done.append("rest of the block")
        done.append("after the block")
    assert done == ["rest of the block"]
    # an error in the block: the signal wins, chained
    with pytest.raises(Interrupted) as e, interrupt_on_signals(), signals_deferred():
        _raise_sigterm()
        raise ValueError("boom")
    assert isinstance(e.value.__cause__, ValueError)


def test_handlers_nest_restore_and_respect_an_existing_one(default_sigterm: None) -> None:
    def mine(signum: int, frame: object) -> None:
        raise RuntimeError("the application's own handler")

    with interrupt_on_signals():
        ours = signal.getsignal(signal.SIGTERM)
        assert ours is not signal.SIG_DFL
        with interrupt_on_signals():
            assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGTERM) is ours
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with interrupt_on_signals():
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_nothing_is_installed(tmp_path: Path) -> None:
    seen: list[object] = []

    def work() -> None:
        with interrupt_on_signals(), signals_deferred():
            seen.append(signal.getsignal(signal.SIGTERM))
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
        seen.append((tmp_path / "out" / "f").read_text())

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=30)
    assert seen == [before, "x"]


def test_interruption_is_found_through_typer_exit_chains() -> None:
    try:
        try:
            raise Interrupted(signal.SIGTERM)
        except KeyboardInterrupt as e:
            raise SystemExit(130) from e
    except SystemExit as e:
        got = interruption(e)
    assert got is not None and got.exit_code == 143
    assert interruption(SystemExit(1)) is None
