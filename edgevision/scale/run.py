"""Predict an archive on a Ray cluster: shards, an actor pool, and a merge into the local command's outputs.

The run folder (DIR of ``edgevision predict ... --out DIR --ray``) is built in ``.DIR.ray-partial`` beside it and
renamed to DIR when every shard is merged; an interrupted or failed run leaves the partial folder, which
``--resume`` continues::

    shards/manifest.json          what was listed and how it is predicted (model sha256, options, counts)
    shards/lists/000000.jsonl     the shard's inputs: ["name", "path"] per line, in the local command's order
    shards/parts/000000.jsonl     its results: one predictions.json image entry, or {"name", "error"}, per line
    predictions.json / .csv       merged from the parts (`edgevision.outputs`), equal to the local command's
    images/                       annotated copies (--save-images)

Each actor holds one model session (``threads`` intra-op threads), reads its shard's images from storage every
node sees, and writes the shard's part atomically: a shard retried after its worker or node died replaces its
part, so no image is lost or counted twice. The pool (`_run_pool`) replaces dead actors and hands their shards to
live ones (at most ``max_attempts`` tries per shard); an error raised by EdgeVision itself (an unusable model)
ends the run with that error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevision.core.dataset import ImageRecord
from edgevision.core.errors import ConfigError, EdgeVisionError

log = logging.getLogger(__name__)

__all__ = ["PredictSpec", "RayOptions", "RayRunSummary", "predict_on_ray", "predict_records_on_ray"]

MANIFEST_SCHEMA = "edgevision.shards/1"
IN_FLIGHT_PER_ACTOR = 2
"""Shards queued on an actor at once: the next one is ready when the current one ends."""


@dataclass(frozen=True)
class RayOptions:
    """How a run uses the cluster.

    Attributes:
        address: None / ``local`` (a loopback cluster started for the call), ``auto``, ``ray://host:port`` or a
            head's ``host:port``.
        actors: model sessions in the pool (default: each node's CPUs // ``threads``, summed; its GPUs for GPU actors).
        threads: intra-op threads of each actor's session (and the CPUs it reserves).
        shard_size: images per shard (the unit of work, retry and resume).
        device: ``cpu``, or a GPU (``0``, ``cuda``): each actor then reserves one GPU.
        providers: ONNX Runtime providers for the actors (default: CPU, or CUDA + CPU for a GPU device).
        max_attempts: tries per shard when workers die.
        local_cpus: CPUs of a local cluster (default: this machine's).
    """

    address: str | None = None
    actors: int | None = None
    threads: int = 1
    shard_size: int = 256
    device: str = "cpu"
    providers: list[str] | None = None
    max_attempts: int = 3
    local_cpus: int | None = None

    @property
    def gpu(self) -> bool:
        return self.device not in ("cpu", "")

    def actor_providers(self) -> list[str]:
        if self.providers:
            return list(self.providers)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.gpu else ["CPUExecutionProvider"]

    def pool_size(self, info: Any) -> int:
        """``actors``, else as many as the nodes hold (`ClusterInfo`): per node, its CPUs // ``threads`` (its
        GPUs for GPU actors)."""
        if self.actors is not None:
            return self.actors
        if self.gpu:
            if info.gpus < 1:
                raise ConfigError(f"--device {self.device}: the Ray cluster has no GPU; use --device cpu")
            return sum(int(g) for g in info.node_gpus) or int(info.gpus)
        return max(1, sum(int(c // self.threads) for c in info.node_cpus) or int(info.cpus // self.threads))


@dataclass(frozen=True)
class PredictSpec:
    """What ``edgevision predict`` computes per image (the same for every shard; recorded in the manifest)."""

    conf: float | None = None
    iou: float = 0.7
    max_det: int = 300
    tile: int | None = None
    tile_overlap: float = 0.2
    full_pass: bool = False
    save_images: bool = False


@dataclass
class RayRunSummary:
    """What a cluster run did.

    Attributes:
        images / unreadable: inputs predicted / listed as unreadable; shards: total, ``resumed``: finished before
        this run; seconds: wall time of the prediction (listing and merge excluded); actors; nodes: node ids that
        ran shards; retried: shards run again after a worker died; cluster: `ClusterInfo.describe`; out: DIR;
        doc_summary: the ``summary`` of predictions.json; before: inputs of the shards finished before ``resume``;
        started: `time.perf_counter` when the pool started.
    """

    images: int = 0
    unreadable: int = 0
    shards: int = 0
    resumed: int = 0
    seconds: float = 0.0
    actors: int = 0
    nodes: set[str] = field(default_factory=set)
    retried: int = 0
    cluster: str = ""
    out: Path | None = None
    doc_summary: dict[str, Any] = field(default_factory=dict)
    before: int = 0
    started: float = 0.0

    @property
    def images_per_s(self) -> float:
        """Inputs (images and unreadable) per second in this run's prediction (so far, while it runs)."""
        seconds = self.seconds or (time.perf_counter() - self.started if self.started else 0.0)
        return (self.images + self.unreadable - self.before) / seconds if seconds > 0 else 0.0


# --------------------------------------------------------------------------- the actor


class _Worker:
    """One model session on a node (wrapped with ``ray.remote`` at run time)."""

    def __init__(self, model: str, mode: str, spec: dict[str, Any], threads: int, providers: list[str],
                 device: str, uri: str | None = None) -> None:
        from edgevision.infer import ObjectStore

        self.store = ObjectStore(uri) if uri else None  # object storage: each worker reads its shard's objects
        self.spec = PredictSpec(**spec)
        if mode == "predict":
            from edgevision.infer import open_model

            self.model = open_model(Path(model), providers=providers, threads=threads, device=device,
                                    tile=self.spec.tile, tile_overlap=self.spec.tile_overlap,
                                    full_pass=self.spec.full_pass)
            self.names = list(self.model.labels.names)
        else:
            from edgevision.models import OnnxPredictor

            self.predictor = OnnxPredictor(Path(model), device=device, threads=threads, providers=providers)

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def predict_shard(self, index: int, lists: str, parts: str, images: str) -> dict[str, Any]:
        from edgevision.core.io import write_atomic
        from edgevision.infer import Frame, predict_source, read_image_file
        from edgevision.outputs import image_entry, save_annotated

        t0 = time.perf_counter()
        names, spec = self.names, self.spec

        def frames() -> Iterator[Frame]:
            for name, path in _read_list(Path(lists) / _shard_file(index)):
                img, error = self.store.read_image(name) if self.store else read_image_file(Path(path))
                yield Frame(name, Path(path), img, error)

        def on_frame(frame: Frame, rec: ImageRecord | None) -> None:
            if spec.save_images and rec is not None and frame.image is not None:
                save_annotated(Path(images), frame.name, frame.image, rec, names, write=write_atomic)

        res = predict_source(self.model, frames(), conf=spec.conf, iou=spec.iou, max_det=spec.max_det,
                             on_frame=on_frame)
        lines = [json.dumps(image_entry(r, names, res.decisions[r.name]), ensure_ascii=False) for r in res.records]
        lines += [json.dumps({"name": n, "error": e}, ensure_ascii=False) for n, e in res.unreadable]
        write_atomic(Path(parts) / _shard_file(index), "".join(ln + "\n" for ln in lines))
        return {"shard": index, "images": len(res.records), "unreadable": len(res.unreadable),
                "seconds": time.perf_counter() - t0, "node": self.node()}

    def predict_records(self, index: int, items: list[tuple[str, str, str | None, tuple[int, int]]], max_det: int,
                        conf: float) -> dict[str, Any]:
        recs = [ImageRecord(name=n, size_hw=hw, path=Path(p), split=s) for n, p, s, hw in items]
        out = self.predictor.predict(recs, conf=conf, max_det=max_det)
        return {"shard": index, "node": self.node(),
                "records": [(r.name, tuple(r.size_hw), r.boxes, r.class_ids, r.scores) for r in out]}


def _shard_file(index: int) -> str:
    return f"{index:06d}.jsonl"


def _read_list(path: Path) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            name, p = json.loads(line)
            yield name, p


# --------------------------------------------------------------------------- the pool


def _system_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker, an actor or a node that died (the work is retried elsewhere)."""
    ex = ray.exceptions
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
             "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError")
    return tuple(getattr(ex, n) for n in names if isinstance(getattr(ex, n, None), type))


def _run_pool(ray: Any, make_actor: Callable[[], Any], n_actors: int, tasks: Iterable[int],
              submit: Callable[[Any, int], Any], on_done: Callable[[int, Any], None], *, describe: Callable[[int], str],
              max_attempts: int, stall_s: float = 600.0) -> int:
    """Run ``submit(actor, task)`` for every task on a pool of ``n_actors`` actors; ``on_done(task, result)`` as
    each finishes (in completion order). Returns how many tasks were retried.

    A task whose actor died (its process, or its node) goes to another actor and a replacement actor is started
    (it may wait for resources); a task tried ``max_attempts`` times, or a run with no actor able to start for
    ``stall_s`` seconds, ends the run with an `EdgeVisionError`; an EdgeVision error raised inside a task (or an
    actor's start) ends it with that error.
    """
    system = _system_errors(ray)
    task_error = ray.exceptions.RayTaskError
    actors: dict[int, Any] = {}  # id -> handle
    ready: set[int] = set()
    busy: dict[int, set[Any]] = {}
    refs: dict[Any, tuple[str, int, Any]] = {}  # ref -> ("ready" | "task", actor id, task)
    attempts: dict[int, int] = {}  # task -> tries
    retry: deque[int] = deque()
    source = iter(tasks)
    peeked: list[Any] = []
    counter = iter(range(1 << 62))
    retried = 0
    spawned = 0
    max_spawn = n_actors * (max_attempts + 1)
    last_progress = time.monotonic()

    def spawn() -> None:
        nonlocal spawned
        spawned += 1
        handle = make_actor()
        aid = next(counter)
        actors[aid] = handle
        busy[aid] = set()
        refs[handle.node.remote()] = ("ready", aid, None)

    def take() -> Any:
        if retry:
            return retry.popleft()
        if peeked:
            return peeked.pop()
        return next(source, _END)

    def more() -> bool:
        if retry or peeked:
            return True
        nxt = next(source, _END)
        if nxt is _END:
            return False
        peeked.append(nxt)
        return True

    def feed(aid: int) -> None:
        while len(busy[aid]) < IN_FLIGHT_PER_ACTOR:
            task = take()
            if task is _END:
                return
            ref = submit(actors[aid], task)
            refs[ref] = ("task", aid, task)
            busy[aid].add(ref)

    def drop(aid: int) -> None:
        if aid in actors:
            ray.kill(actors.pop(aid), no_restart=True)
            ready.discard(aid)

    def fail(e: BaseException, what: str) -> None:
        cause = getattr(e, "cause", None)
        if isinstance(cause, EdgeVisionError):
            raise cause
        raise EdgeVisionError(f"{what}: {_last_line(str(cause) if cause is not None else str(e))}") from e

    try:
        for _ in range(n_actors):
            spawn()
        while True:
            in_flight = any(kind == "task" for kind, _, _ in refs.values())
            if not in_flight and not more():
                return retried
            done, _ = ray.wait(list(refs), num_returns=1, timeout=5.0)
            if not done:
                if not in_flight and time.monotonic() - last_progress > stall_s:
                    raise EdgeVisionError(f"no Ray actor could start in {stall_s:.0f} s (the cluster lacks the CPUs / "
                                          "GPUs each actor reserves); lower --threads or add nodes")
                continue
            ref = done[0]
            kind, aid, task = refs.pop(ref)
            try:
                value = ray.get(ref)
            except task_error as e:
                if isinstance(e, system):  # some Ray versions raise actor deaths as task errors too
                    value = e
                else:
                    fail(e, "starting a model session on the cluster" if kind == "ready" else describe(task))
            except system as e:
                if getattr(e, "_actor_init_failed", False):  # the model session could not start on that node
                    raise EdgeVisionError("starting a model session on the cluster failed: "
                                          f"{_last_line(str(e))}") from e
                value = e
            last_progress = time.monotonic()
            if isinstance(value, BaseException):  # the actor (its process or node) died
                was_alive = aid in actors
                drop(aid)
                busy.get(aid, set()).discard(ref)
                if kind == "task":
                    attempts[task] = attempts.get(task, 1) + 1
                    if attempts[task] > max_attempts:
                        raise EdgeVisionError(f"{describe(task)}: its Ray worker died {max_attempts} times "
                                              f"({type(value).__name__}); the last: {str(value).splitlines()[0]}")
                    retry.append(task)
                    retried += 1
                    log.warning("%s: worker died (%s); retrying on another actor", describe(task),
                                type(value).__name__)
                if was_alive:
                    if spawned >= max_spawn:
                        raise EdgeVisionError(f"Ray actors died {spawned} times; the last: "
                                              f"{str(value).splitlines()[0]}")
                    spawn()
                for other in list(ready):
                    feed(other)
                continue
            if kind == "ready":
                ready.add(aid)
            else:
                busy[aid].discard(ref)
                on_done(task, value)
            if aid in actors:
                feed(aid)
    finally:
        for aid in list(actors):
            drop(aid)


_END = object()


def _last_line(text: str) -> str:
    """The exception line of a remote traceback, without its module path (``ConfigError: ...``)."""
    line = text.strip().splitlines()[-1] if text.strip() else "unknown error"
    head, sep, rest = line.partition(": ")
    return f"{head.rsplit('.', 1)[-1]}: {rest}" if sep and " " not in head else line


def _make_actor_factory(ray: Any, opts: RayOptions, model: Path, mode: str, spec: PredictSpec,
                        uri: str | None = None) -> Callable[[], Any]:
    remote = ray.remote(max_restarts=0, max_task_retries=0)(_Worker)
    res: dict[str, Any] = {"num_cpus": opts.threads}
    if opts.gpu:
        res["num_gpus"] = 1
    args = (str(model.resolve()), mode, asdict(spec), opts.threads, opts.actor_providers(), opts.device, uri)
    return lambda: remote.options(scheduling_strategy="SPREAD", **res).remote(*args)


# --------------------------------------------------------------------------- eval


def predict_records_on_ray(model: Path | str, records: list[ImageRecord], *, max_det: int = 100,
                           conf: float | None = None, options: RayOptions | None = None,
                           progress: Callable[[int, int], None] | None = None) -> list[ImageRecord]:
    """The predictions `edgevision.models.OnnxPredictor.predict` makes for ``records`` (their image files), made
    on a Ray cluster: the same values, in the same order (what ``edgevision eval --ray`` scores).

    Args:
        conf: lowest score kept (default `edgevision.models.LOW_CONF`); progress: ``progress(done, total)``.

    Raises:
        ConfigError: MODEL is not an ONNX file, Ray is missing or the cluster unreachable.
    """
    from edgevision.models import LOW_CONF, resolve_model
    from edgevision.scale.cluster import connected

    opts = options or RayOptions()
    ref = resolve_model(model)
    if ref.kind != "onnx":
        raise ConfigError(f"{model}: a Ray run predicts with ONNX models; export it first (edgevision export)")
    for r in records:
        if r.path is None:
            raise ConfigError(f"{r.name}: the record has no image path")
    chunks = [records[i:i + opts.shard_size] for i in range(0, len(records), opts.shard_size)]
    got: dict[int, list[Any]] = {}
    done = 0

    def on_done(index: int, value: dict[str, Any]) -> None:
        nonlocal done
        got[index] = value["records"]
        done += len(value["records"])
        if progress is not None:
            progress(done, len(records))

    def submit(actor: Any, index: int) -> Any:
        items = [(r.name, str(Path(r.path).resolve()), r.split, tuple(r.size_hw))  # type: ignore[arg-type]
                 for r in chunks[index]]
        return actor.predict_records.remote(index, items, max_det, LOW_CONF if conf is None else conf)

    with connected(opts.address, num_cpus=opts.local_cpus) as info:
        ray = _ray()
        n = min(opts.pool_size(info), max(1, len(chunks)))
        _run_pool(ray, _make_actor_factory(ray, opts, ref.path, "records", PredictSpec()), n, range(len(chunks)),
                  submit, on_done, describe=lambda i: f"records {i * opts.shard_size}..", max_attempts=opts.max_attempts)
    out: list[ImageRecord] = []
    for i, chunk in enumerate(chunks):
        for r, (name, size_hw, boxes, class_ids, scores) in zip(chunk, got[i]):
            out.append(ImageRecord(name=name, size_hw=size_hw, boxes=boxes, class_ids=class_ids, scores=scores,
                                   path=r.path, split=r.split))
    return out


def _ray() -> Any:
    from edgevision.scale.cluster import import_ray

    return import_ray()


# --------------------------------------------------------------------------- predict


def partial_dir(out: Path) -> Path:
    """Where a cluster run builds DIR (and what ``--resume`` continues)."""
    return out.parent / f".{out.name}.ray-partial"


def predict_on_ray(model: Path | str, source: str, out: Path | str, *, spec: PredictSpec | None = None,
                   options: RayOptions | None = None, fmt: str = "json", resume: bool = False, overwrite: bool = False,
                   progress: Callable[[RayRunSummary, int], None] | None = None,
                   on_cluster: Callable[[str], None] | None = None) -> RayRunSummary:
    """``edgevision predict MODEL SOURCE --out DIR --ray``: see the module doc.

    Args:
        source: a folder (streamed), a list file (one image path per line, streamed) or a glob pattern of images,
            on storage every node sees; or an object storage URI (``s3://bucket/prefix``: listed by the driver,
            each object read by the worker that predicts it, see `edgevision.infer.ObjectStore`).
        fmt: ``json``, or ``csv`` for ``predictions.csv`` too.
        resume: continue the run left in `partial_dir` (same model, source and options), skipping its finished
            shards.
        progress: ``progress(summary, total_images)`` after each shard; on_cluster: called with the cluster's
            description once connected.

    Raises:
        ConfigError: a bad source, model or option; `OutputExistsError`: DIR exists without ``overwrite``;
        EdgeVisionError: the cluster run failed (its partial folder is kept for ``resume``).
    """
    from edgevision.commands.predict import header
    from edgevision.core.errors import OutputExistsError
    from edgevision.core.io import sha256_file, write_atomic
    from edgevision.infer import VIDEO_EXTS, is_uri, open_model, resolve_thresholds
    from edgevision.models import resolve_model
    from edgevision.scale.cluster import connected

    spec = spec or PredictSpec()
    opts = options or RayOptions()
    out = Path(out)
    ref = resolve_model(model)
    if ref.kind != "onnx":
        raise ConfigError(f"{model}: a Ray run predicts with ONNX models; export it first (edgevision export)")
    if Path(source).suffix.lower() in VIDEO_EXTS:
        raise ConfigError(f"{source}: a Ray run predicts image archives; predict a video locally (without --ray)")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output folder already exists; choose another --out or pass --overwrite")
    if Path(source).is_dir():  # as the local command: DIR neither inside SOURCE nor holding it
        from edgevision.core.io import check_output_clear

        check_output_clear(out, {Path(source)}, what="--out", inside=True)
    stage = partial_dir(out)
    if stage.is_dir() and not (stage / "shards" / "manifest.json").is_file():
        shutil.rmtree(stage)  # a listing that never finished (the process was killed): nothing was predicted
    if resume and not (stage / "shards" / "manifest.json").is_file():
        raise ConfigError(f"--resume: no interrupted run to continue ({stage} not found); run without --resume")
    if not resume and stage.exists():
        raise ConfigError(f"{stage}: an interrupted run of this --out is there; continue it with --resume, or "
                          "delete that folder to start again")
    m = open_model(ref.path, providers=["CPUExecutionProvider"], threads=1, tile=spec.tile,
                   tile_overlap=spec.tile_overlap, full_pass=spec.full_pass)  # checked here, before the cluster
    names = list(m.labels.names)
    thresholds, threshold_source = resolve_thresholds(m, spec.conf)
    rules = dict(m.decision.rules) if spec.conf is None and m.decision.operating else {}
    identity = {"source": str(source), "model": str(Path(model)), "model_sha256": sha256_file(ref.path),
                "predict": asdict(spec), "shard_size": opts.shard_size}
    shards = stage / "shards"
    if resume:
        manifest = json.loads((shards / "manifest.json").read_text(encoding="utf-8"))
        differ = [k for k, v in identity.items() if manifest.get(k) != v]
        if differ:
            raise ConfigError(f"--resume: {stage} was started with another {', '.join(differ)} "
                              f"({', '.join(f'{k}={manifest.get(k)!r}' for k in differ)}); run it with the same "
                              "arguments, or delete that folder to start again")
    else:
        (shards / "parts").mkdir(parents=True)
        try:
            total, n_shards = _list_shards(source, shards / "lists", opts.shard_size, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)  # nothing predicted yet: leave nothing behind
            raise
        manifest = {"schema": MANIFEST_SCHEMA, **identity, "images": total, "shards": n_shards,
                    "lists": "lists/{shard:06d}.jsonl", "parts": "parts/{shard:06d}.jsonl"}
        write_atomic(shards / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    total, n_shards = int(manifest["images"]), int(manifest["shards"])
    todo = [i for i in range(n_shards) if not (shards / "parts" / _shard_file(i)).is_file()]
    summary = RayRunSummary(shards=n_shards, resumed=n_shards - len(todo))
    for i in sorted(set(range(n_shards)) - set(todo)):  # finished before --resume
        n_ok, n_bad = _count_part(shards / "parts" / _shard_file(i))
        summary.images += n_ok
        summary.unreadable += n_bad
    summary.before = summary.images + summary.unreadable

    def on_done(index: int, value: dict[str, Any]) -> None:
        summary.images += value["images"]
        summary.unreadable += value["unreadable"]
        summary.nodes.add(value["node"])
        if progress is not None:
            progress(summary, total)

    def submit(actor: Any, index: int) -> Any:
        return actor.predict_shard.remote(index, str((shards / "lists").resolve()), str((shards / "parts").resolve()),
                                          str((stage / "images").resolve()))

    if todo:
        with connected(opts.address, num_cpus=opts.local_cpus) as info:
            summary.cluster = info.describe()
            if on_cluster is not None:
                on_cluster(summary.cluster)
            ray = _ray()
            summary.actors = min(opts.pool_size(info), len(todo))
            t0 = summary.started = time.perf_counter()
            uri = str(source) if is_uri(str(source)) else None
            summary.retried = _run_pool(ray, _make_actor_factory(ray, opts, ref.path, "predict", spec, uri), summary.actors,
                                        todo, submit, on_done, describe=lambda i: f"shard {i} ({shards / 'lists' / _shard_file(i)})",
                                        max_attempts=opts.max_attempts)
            summary.seconds = time.perf_counter() - t0
    summary.doc_summary = _merge(stage, n_shards, header(Path(model), "onnx", names, thresholds, threshold_source,
                                                         rules), fmt)
    from edgevision.core.signals import raise_if_interrupted

    raise_if_interrupted()
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    summary.out = out
    return summary


def _count_part(path: Path) -> tuple[int, int]:
    ok = bad = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            if "error" in json.loads(line):
                bad += 1
            else:
                ok += 1
    return ok, bad


def _list_shards(source: str, lists: Path, shard_size: int, out: Path) -> tuple[int, int]:
    """Write SOURCE's listing into shard list files, streamed (a glob is sorted in memory); return (images,
    shards).

    Raises:
        ConfigError: SOURCE matches nothing, or lists a file inside DIR (--overwrite would delete it).
    """
    from edgevision.infer import LIST_EXTS, is_uri, iter_source_files, source_files

    p = Path(source)
    uri = is_uri(source)
    if uri or p.is_dir() or p.is_file() and p.suffix.lower() in LIST_EXTS:
        pairs: Iterable[tuple[str, Path]] = iter_source_files(source)
    elif p.is_file():
        pairs = [(p.name, p)]
    else:
        pairs, is_video = source_files(source)
        if is_video:
            raise ConfigError(f"{source}: a Ray run predicts image archives; predict a video locally (without --ray)")
    lists.mkdir(parents=True, exist_ok=True)
    inside = os.path.abspath(out) + os.sep
    total = shard = 0
    f = None
    try:
        for name, path in pairs:
            full = name if uri else os.path.abspath(path)  # an object is read by its name (`ObjectStore`)
            if not uri and full.startswith(inside):
                raise ConfigError(f"{source}: lists {path}, inside --out {out}; write the output elsewhere")
            if total % shard_size == 0:
                if f is not None:
                    f.close()
                f = (lists / _shard_file(shard)).open("w", encoding="utf-8")
                shard += 1
            assert f is not None
            f.write(json.dumps([name, full], ensure_ascii=False) + "\n")
            total += 1
    finally:
        if f is not None:
            f.close()
    return total, shard


def _merge(stage: Path, n_shards: int, head: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Write predictions.json (and .csv, from the same pass over the images) from the parts, streamed; return the
    summary."""
    from edgevision.outputs import csv_rows, csv_writer, write_predictions_json

    parts = stage / "shards" / "parts"

    def lines() -> Iterator[dict[str, Any]]:
        for i in range(n_shards):
            with (parts / _shard_file(i)).open(encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)

    with contextlib.ExitStack() as files:
        rows = csv_writer(files.enter_context((stage / "predictions.csv").open("w", encoding="utf-8", newline=""))) \
            if fmt == "csv" else None

        def images() -> Iterator[dict[str, Any]]:
            for d in lines():
                if "error" not in d:
                    if rows is not None:
                        rows.writerows(csv_rows([d]))
                    yield d

        f = files.enter_context((stage / "predictions.json").open("w", encoding="utf-8"))
        return write_predictions_json(f, head, images(), (d for d in lines() if "error" in d))
