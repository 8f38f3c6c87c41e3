"""`Line`: sources -> a bounded queue -> the detector -> the inspection record -> the sinks.

Per image: decode (the pixel limit read from the header first, as everywhere in EdgeVision) -> detect at the
model's operating points -> the part's `PartDecision` (``NG`` when any detection passes, or when the image
cannot be read: a part nobody inspected is never accepted) -> one transaction in the record (with the
messages of the durable sinks) -> every sink's ``publish`` (non-blocking) -> the image kept or not (every
reject, a sample of accepted parts) -> the source's ``after`` policy. A crash anywhere loses no recorded
part and inspects no file twice (see `edgevision.line.record`, `edgevision.line.sources`).

Sources with a ``trigger`` section get `edgevision.line.triggers` (MQTT or OPC UA; started with the sinks,
closed at the end; their status under the source's in `Line.status` and in ``/metrics``).

Back-pressure (`QueueConfig`): ``block`` makes a source wait (a hot folder just leaves files where they are);
``drop_oldest`` drops the oldest waiting image, counts it and logs an alarm.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevision.core.errors import ConfigError, EdgeVisionError
from edgevision.line.config import LineConfig
from edgevision.line.drift import DriftWatch
from edgevision.line.record import is_postgres_url, open_outbox, open_store
from edgevision.line.sinks.base import PartDecision, Sink
from edgevision.line.sources import HotFolder, Item, VideoStream, make_source

if TYPE_CHECKING:
    from edgevision.line.triggers import Triggers

log = logging.getLogger(__name__)

__all__ = ["Line", "LineStats"]


@dataclass
class LineStats:
    """Counters since start: parts recorded, OK / NG, unreadable images, images dropped by back-pressure,
    kept images, the last inference time (ms)."""

    parts: int = 0
    ok: int = 0
    ng: int = 0
    unreadable: int = 0
    dropped: int = 0
    kept_images: int = 0
    last_inference_ms: float = 0.0
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Line:
    """The running line (see the module doc). ``Line(cfg).run(stop)`` until ``stop`` is set.

    Raises (at construction):
        ConfigError / ModelFormatError: a bad model, a missing folder, a sink that cannot start.
    """

    def __init__(self, cfg: LineConfig, *, sinks: list[Sink] | None = None) -> None:
        from edgevision.core.io import sha256_file
        from edgevision.runtime import Detector

        self.cfg = cfg
        if not Path(cfg.model).is_file():
            raise ConfigError(f"model: {cfg.model} not found; give the ONNX file written by edgevision export")
        providers = cfg.providers.split(",") if cfg.providers else None
        self.detector = Detector(cfg.model, providers=providers, threads=cfg.threads)
        self.model_sha256 = sha256_file(cfg.model)
        self.thresholds = self.detector.metadata.decision_thresholds().classes
        self.sources = [make_source(s, i) for i, s in enumerate(cfg.sources)]
        for s in self.sources:
            s.check()
        self.triggers: list[Triggers] = []
        for s in self.sources:
            if s.cfg.trigger is not None:
                from edgevision.line.triggers import make_triggers

                s.triggers = make_triggers(s.cfg.trigger, s.name, station=cfg.station)
                self.triggers.append(s.triggers)
        db = self._db_target()
        if isinstance(db, str) and cfg.record.images_dir is None:
            raise ConfigError("record.images_dir: give the folder kept images go to (a PostgreSQL record has no "
                              "database file to keep them beside)")
        self.store = open_store(db, station=cfg.station)
        self.store.set_meta(f"model:{self.model_sha256}", json.dumps({
            "file": Path(cfg.model).name, "thresholds": self.detector.metadata.thresholds,
            "names": self.detector.names}))
        self.sinks: list[Sink] = sinks if sinks is not None else self._make_sinks(db)
        self.durable = [s.name for s in self.sinks if s.durable]
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=cfg.queue.size)
        self.stats = LineStats()
        self._rng = random.Random(0)
        self._lock = threading.Lock()
        self.images_dir = Path(cfg.record.images_dir) if cfg.record.images_dir else Path(db).parent / "images"
        d = cfg.drift
        self.drift = DriftWatch(self.detector.metadata.data_stats, window=d.window, warmup=d.warmup,
                                threshold=d.threshold, rate_threshold=d.rate_threshold,
                                min_parts=d.min_parts) if d.enabled else None
        self.record_error: str | None = None

    def _db_target(self) -> Path | str:
        """The record: an SQLite file's path, or a PostgreSQL URL (from ``db``, ``db_file`` or ``db_env``)."""
        from edgevision.line.config import read_secret

        r = self.cfg.record
        url = r.db if r.db is not None else read_secret(r.db_file, r.db_env, "record.db")
        assert url is not None
        if is_postgres_url(url):
            return url
        return Path(url.removeprefix("sqlite:///"))

    def _make_sinks(self, db: Path | str) -> list[Sink]:
        sinks: list[Sink] = []
        s = self.cfg.sinks
        model = Path(self.cfg.model).name
        if s.opcua is not None:
            from edgevision.line.sinks.opcua import OpcUaServerSink

            sinks.append(OpcUaServerSink(s.opcua, self.cfg.station, model, self.model_sha256))
        if s.opcua_client is not None:
            from edgevision.line.sinks.opcua_client import OpcUaClientSink

            sinks.append(OpcUaClientSink(s.opcua_client, self.cfg.station, model, self.model_sha256))
        if s.modbus is not None:
            from edgevision.line.sinks.modbus import ModbusSink

            sinks.append(ModbusSink(s.modbus, self.cfg.station))
        if s.mqtt is not None:
            from edgevision.line.sinks.mqtt import MqttSink

            sinks.append(MqttSink(s.mqtt, self.cfg.station, open_outbox(db, "mqtt", station=self.cfg.station)))
        return sinks

    # ------------------------------------------------------------------ sources -> queue

    def _put(self, item: Item) -> bool:
        if self.cfg.queue.when_full == "block":
            while not self._stop.is_set():
                try:
                    self.queue.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False
        while True:
            try:
                self.queue.put_nowait(item)
                return True
            except queue.Full:
                try:
                    old = self.queue.get_nowait()
                except queue.Empty:
                    continue
                with self._lock:
                    self.stats.dropped += 1
                log.warning("queue full (%d): dropped the oldest waiting image %s (when_full: drop_oldest)",
                            self.cfg.queue.size, old.name)
                old.finish(False)

    def _seen(self, key: str) -> bool:
        """Whether ``key``'s part is recorded; while the record cannot be read, the calling source waits (a file
        is neither inspected twice nor finished unrecorded)."""
        failing = False
        while True:
            try:
                found = self.store.seen(key) is not None
            except (sqlite3.Error, OSError) as e:  # RecordError included: the database is down
                if not failing:
                    log.error("cannot read the record (%s); the source waits, retrying every second", e)
                    failing = True
                self.record_error = f"cannot read the record: {e}"
                if self._stop.wait(1.0):
                    return False  # stopping: the file is not handed on (put is not called once stop is set)
                continue
            if failing and self.record_error is not None and self.record_error.startswith("cannot read the record"):
                self.record_error = None
            return found

    # ------------------------------------------------------------------ one part

    def inspect(self, item: Item) -> PartDecision:
        """Decide, record and publish one item; returns its recorded decision."""
        from edgevision.runtime.images import decode_image_bytes

        t0 = time.perf_counter()
        error = None
        detections: list[dict[str, Any]] = []
        classes: dict[str, int] = {}
        try:
            image = item.image if item.image is not None else decode_image_bytes(item.data or b"", item.name)
            det = self.detector(image)
            if self.drift is not None:
                self.drift.observe(image, [float(v) for v in det.scores.tolist()])
            for box, score, cid in zip(det.xyxy.tolist(), det.scores.tolist(), det.class_ids.tolist()):
                name = self.detector.names[int(cid)]
                detections.append({"class": name, "score": round(float(score), 6),
                                   "xyxy": [round(float(v), 2) for v in box]})
                classes[name] = classes.get(name, 0) + 1
        except EdgeVisionError as e:
            error = str(e)
        ms = (time.perf_counter() - t0) * 1e3
        decision = "NG" if detections or error else "OK"
        part = PartDecision(
            seq=0, time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            station=self.cfg.station, source=item.source, part_id=item.part_id, serial=item.serial, image=item.name,
            image_sha256=item.sha256(), decision=decision, defects=len(detections), classes=classes,
            detections=detections, inference_ms=round(ms, 3), model=Path(self.cfg.model).name,
            model_sha256=self.model_sha256, thresholds=self.thresholds, error=error)
        part = self.store.record(part, image_key=item.key, outbox=self.durable)
        for sink in self.sinks:
            try:
                sink.publish(part)
            except Exception as e:  # a sink must never stop inspection
                log.error("sink %s: publish failed (%s: %s)", sink.name, e.__class__.__name__, e)
        self._keep(item, part)
        item.finish(True)
        with self._lock:
            s = self.stats
            s.parts += 1
            s.ok += decision == "OK"
            s.ng += decision == "NG"
            s.unreadable += error is not None
            s.last_inference_ms = ms
        if error:
            log.warning("%s: cannot inspect (%s): recorded as NG for a person to check", item.name, error)
        return part

    def _keep(self, item: Item, part: PartDecision) -> None:
        r = self.cfg.record
        keep = (part.decision == "NG" and r.keep_rejects) or (part.decision == "OK" and
                                                               self._rng.random() < r.keep_accepted)
        if not keep:
            return
        day = part.time[:10]
        target = self.images_dir / day / f"{part.seq:09d}_{Path(item.name).name.replace('#', '_')}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if item.data is not None:
                target.write_bytes(item.data)
            elif item.image is not None:
                import cv2

                target = target.with_suffix(".png")
                cv2.imwrite(str(target), item.image)
            self.store.set_kept_image(part.seq, str(target))
            with self._lock:
                self.stats.kept_images += 1
        except OSError as e:
            log.error("cannot keep the image of part %d in %s (%s): the part is recorded, its image is not",
                      part.seq, target.parent, e.strerror)

    # ------------------------------------------------------------------ run

    def healthy(self) -> tuple[bool, str]:
        down = [f"{s.name}: {s.status().detail}" for s in self.sources if s.status().state == "down"]
        for s in self.sources:
            trig = s.triggers.status() if s.triggers is not None else None
            if trig is not None and trig["state"] != "up":  # images would go without their part ids
                down.append(f"{s.name} trigger: {trig['detail']}")
        if self.record_error:
            down.append(f"record: {self.record_error}")
        if self.drift is not None:
            drift = self.drift.status()
            if drift["alarm"]:
                down.append(drift["detail"])
        return (not down, "; ".join(down) or "all sources up")

    def prune_images(self) -> int:
        """Apply the retention policy to kept images: days older than ``retention_days`` go, then the oldest
        files until the folder is under ``retention_gb``. Returns the number of files removed."""
        r = self.cfg.record
        if not self.images_dir.is_dir():
            return 0
        cutoff = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=r.retention_days)).date().isoformat()
        files: list[tuple[str, Path, int]] = []
        removed = 0
        for day in sorted(p for p in self.images_dir.iterdir() if p.is_dir()):
            for f in sorted(day.iterdir()):
                try:
                    size = f.stat().st_size
                except OSError:
                    continue
                if day.name < cutoff:
                    f.unlink(missing_ok=True)
                    removed += 1
                else:
                    files.append((day.name, f, size))
            if day.name < cutoff:
                with contextlib.suppress(OSError):
                    day.rmdir()
        budget, total = r.retention_gb * 1e9, sum(f[2] for f in files)
        for _, f, size in files:  # oldest day first, then by name (the part's sequence number)
            if total <= budget:
                break
            f.unlink(missing_ok=True)
            total -= size
            removed += 1
        if removed:
            log.info("retention: removed %d kept image(s) from %s", removed, self.images_dir)
        return removed

    def status(self) -> dict[str, Any]:
        ok, detail = self.healthy()
        with self._lock:
            stats = self.stats.to_dict()
        return {"station": self.cfg.station, "healthy": ok, "detail": detail, "stats": stats,
                "queue": self.queue.qsize(),
                "sources": [{**s.status().to_dict(), **({"trigger": s.triggers.status()} if s.triggers else {})}
                            for s in self.sources],
                "sinks": [s.status().to_dict() for s in self.sinks],
                "drift": None if self.drift is None else self.drift.status()}

    def run(self, stop: threading.Event, *, on_part: Callable[[PartDecision], None] | None = None,
            until_idle: bool = False) -> None:
        """Run until ``stop`` is set (or, with ``until_idle``, until every source is finished or idle and the
        queue is empty: for tests and batch runs). Sinks are started first and closed last."""
        self._stop = stop
        started: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.start()
                started.append(sink)
            for trig in self.triggers:
                trig.start()
            threads = [threading.Thread(target=s.run, args=(self._put, stop, self._seen), name=f"source-{s.name}",
                                        daemon=True) for s in self.sources]
            for t in threads:
                t.start()
            beat = threading.Thread(target=self._heartbeat, args=(stop,), name="heartbeat", daemon=True)
            beat.start()
            idle_since: float | None = None
            while not stop.is_set():
                try:
                    item = self.queue.get(timeout=0.1)
                except queue.Empty:
                    if until_idle and self._idle():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since > 0.5:
                            break
                    continue
                idle_since = None
                while not stop.is_set():
                    try:
                        part = self.inspect(item)
                    except (sqlite3.Error, OSError) as e:  # a full disk, a database down (RecordError): say so, retry
                        if self.record_error is None:
                            log.error("cannot record %s (%s); inspection paused, retrying every second", item.name, e)
                        self.record_error = f"cannot record parts: {e}"
                        stop.wait(1.0)
                        continue
                    if self.record_error is not None:
                        log.warning("recording again: %s", item.name)
                    self.record_error = None
                    if on_part is not None:
                        on_part(part)
                    break
            stop.set()
            for t in threads:
                t.join(timeout=5)
            while True:  # images already taken from a source are inspected, not lost
                try:
                    self.inspect(self.queue.get_nowait())
                except queue.Empty:
                    break
        finally:
            stop.set()
            for trig in self.triggers:
                try:
                    trig.close()
                except Exception as e:
                    log.error("triggers of %s: close failed (%s)", trig.source, e)
            for sink in started:
                try:
                    sink.close()
                except Exception as e:
                    log.error("sink %s: close failed (%s)", sink.name, e)
            self.store.close()

    def _idle(self) -> bool:
        for s in self.sources:
            if isinstance(s, VideoStream) and s.status().state != "finished":
                return False
            if isinstance(s, HotFolder) and s.poll_pending():
                return False
        return self.queue.empty()

    def _heartbeat(self, stop: threading.Event) -> None:
        last_prune = 0.0
        while not stop.wait(1.0):
            if time.monotonic() - last_prune > 60:
                last_prune = time.monotonic()
                try:
                    self.prune_images()
                except OSError as e:
                    log.error("retention: cannot prune %s (%s)", self.images_dir, e)
            ok, detail = self.healthy()
            for sink in self.sinks:
                try:
                    sink.heartbeat(ok, detail)
                except Exception as e:
                    log.error("sink %s: heartbeat failed (%s)", sink.name, e)

