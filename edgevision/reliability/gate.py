"""The release gate: thresholds in YAML (`Gate`), judged against a reliability run (`judge_gate`).

A gate may set any subset of its keys. Absolute latency limits depend on the box, so the shipped
``configs/gate/default.yaml`` judges the model against a reference model (``--reference``, usually the
FP32 export of the same weights) and leaves absolute limits to the user's own gate file.

The image-level rate limits (``escape_rate_max``, ``false_reject_rate_max``) are judged on the measured rate
(``bound: point``, the default) or, as a QA engineer signs them, on its exact (Clopper-Pearson) 95% upper bound
(``bound: upper``): "0 escapes on 18 defective images" shows an escape rate of at most 18.5%, not 0%. When
the split holds too few images for a limit to be shown even with zero failures (`limit_support`), the check
says so in one line; under ``bound: upper`` it then fails.

``licence: {permissive_only: true}`` judges the model's licence chain as its metadata records it (training code,
starting weights, dataset; `edgevision.licences`): any item that is copyleft, not for commercial use, or of
unknown licence fails the check, named in its detail, unless listed in ``licence.accept`` (an item's name or
role, after a legal review). The runtime dependencies are the box's install, not the model's: check them with
``edgevision licences --deploy WHEELHOUSE --permissive-only``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgevision.core.errors import ConfigError, short_repr, short_text

__all__ = ["EXPLAIN", "Check", "Gate", "LicenceGate", "explain", "gate_dirs", "judge_gate", "load_gate",
           "resolve_gate", "suites_needed"]


class LicenceGate(BaseModel):
    """The gate's ``licence`` key.

    Attributes:
        permissive_only: True: every item of the model's licence chain must be permissive.
        accept: item names (``neu-det``, ``yolov8n-coco``) or roles (``code``, ``weights``, ``dataset``) accepted
            after a review, e.g. ``[dataset]`` for your own line images, whose licence no recipe records.
    """

    model_config = ConfigDict(extra="forbid")

    permissive_only: bool = False
    accept: list[str] = Field(default_factory=list)


class Gate(BaseModel):
    """Release thresholds; None (absent) = not judged.

    Attributes:
        p99_latency_ms: the model's single-stream p99, whole pipeline, at most this (box-specific).
        p99_latency_ratio_max: the model's p99 over the reference's p99, at most this (1.0: not slower).
        map50_95_min: COCO mAP50-95 on the split, at least this.
        int8_max_drop: relative mAP50-95 drop against the reference, at most this (0.01: 1%); as in
            ``edgevision quantize``, a drop above it fails only when its paired bootstrap interval excludes zero.
        escape_rate_max / false_reject_rate_max: image-level rates at the model's operating points, at most this.
        bound: how those two rate limits are judged: ``point`` (default) on the measured rate, ``upper`` on its
            exact (Clopper-Pearson) 95% upper bound, so that a pass shows the true rate is within the limit;
            with ``upper`` a split too small to show the limit even with zero failures fails the check.
        rpc_min: relative performance under corruption (mPC / clean mAP), at least this.
        rss_growth_mb_per_h_max: the soak's memory slope, at most this (also the soak's leak limit).
        crashes_max: exceptions other than clear errors, wrong answers under threads and failed calls in the
            soak, at most this many.
        determinism: True: the determinism suite must pass.
        licence: `LicenceGate`: ``permissive_only`` fails a model whose licence chain is not permissive.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "gate"
    p99_latency_ms: float | None = Field(None, gt=0)
    p99_latency_ratio_max: float | None = Field(None, gt=0)
    map50_95_min: float | None = Field(None, ge=0, le=1)
    int8_max_drop: float | None = Field(None, ge=0, lt=1)
    escape_rate_max: float | None = Field(None, ge=0, le=1)
    false_reject_rate_max: float | None = Field(None, ge=0, le=1)
    bound: Literal["point", "upper"] = "point"
    rpc_min: float | None = Field(None, ge=0)
    rss_growth_mb_per_h_max: float | None = Field(None, ge=0)
    crashes_max: int | None = Field(None, ge=0)
    determinism: bool | None = None
    licence: LicenceGate | None = None

    def needs_reference(self) -> list[str]:
        return [k for k in ("p99_latency_ratio_max", "int8_max_drop") if getattr(self, k) is not None]


def load_gate(path: Path | str) -> Gate:
    """Read a gate YAML file (unknown keys refused with the closest known one).

    Raises:
        ConfigError: missing or unreadable file, not a mapping, unknown key, bad value.
    """
    import difflib

    from edgevision.core.safeload import load_yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: gate file not found; see configs/gate/default.yaml")
    doc = load_yaml(p, "gate")
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping of thresholds (e.g. `crashes_max: 0`), got {type(doc).__name__}")
    sections: list[tuple[str, dict[Any, Any], list[str]]] = [("", doc, list(Gate.model_fields))]
    if isinstance(doc.get("licence"), dict):
        sections.append(("licence.", doc["licence"], list(LicenceGate.model_fields)))
    for prefix, section, known in sections:
        for key in section:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, 1) if len(str(key)) <= 200 else []
                raise ConfigError(f"{p}: unknown gate key {short_repr(f'{prefix}{key}' if prefix else key)}"
                                  + (f" (did you mean '{prefix}{close[0]}'?)" if close else "")
                                  + f"; known keys: {', '.join(prefix + k for k in known)}")
    try:
        return Gate.model_validate({"name": p.stem, **doc})
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{p}: {short_text('.'.join(map(str, err['loc'])), 100)}: {short_text(err['msg'], 160)} "
                          f"(got {short_repr(err.get('input'))})") from None


def gate_dirs() -> list[Path]:
    """Where named gates live: the repository's ``configs/gate/``, then the package's ``_gates`` (a wheel)."""
    pkg = Path(__file__).resolve().parents[1]
    return [d for d in (pkg.parent / "configs" / "gate", pkg / "_gates") if d.is_dir()]


def resolve_gate(spec: str | Path | None) -> Gate:
    """A gate from a YAML path, or a shipped gate by name (``default``, ``line-example``); None: ``default``."""
    name = "default" if spec is None else str(spec)
    p = Path(name)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return load_gate(p)
    for d in gate_dirs():
        if (d / f"{name}.yaml").is_file():
            return load_gate(d / f"{name}.yaml")
    shipped = sorted({f.stem for d in gate_dirs() for f in d.glob("*.yaml")})
    raise ConfigError(f"--gate {name}: neither a YAML file nor a shipped gate (shipped: {', '.join(shipped) or 'none'})")


def suites_needed(gate: Gate) -> set[str]:
    """The suites (and measurements) the gate's keys are computed from."""
    need = set()
    if gate.rpc_min is not None:
        need.add("robustness")
    if gate.rss_growth_mb_per_h_max is not None:
        need.add("soak")
    if gate.determinism:
        need.add("determinism")
    if gate.crashes_max is not None:
        need |= {"bad_input", "concurrency"}
    return need


@dataclass
class Check:
    key: str
    limit: float | bool
    value: float | bool | None
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_gate(gate: Gate, facts: dict[str, Any]) -> list[Check]:
    """One `Check` per threshold the gate sets. ``facts`` holds the measured values (None: not measured)."""
    checks: list[Check] = []

    def bound(key: str, value: float | None, what: str, upper: bool, fmt: str = "{:.4g}") -> None:
        limit = getattr(gate, key)
        if limit is None:
            return
        if value is None:
            checks.append(Check(key, limit, None, False, f"{what}: not measured"))
            return
        ok = value <= limit if upper else value >= limit
        sign = ("<=" if ok else ">") if upper else (">=" if ok else "<")
        checks.append(Check(key, limit, value, ok, f"{what} {fmt.format(value)} {sign} {limit:g}"))

    def at_most(key: str, value: float | None, what: str, fmt: str = "{:.4g}") -> None:
        bound(key, value, what, True, fmt)

    def at_least(key: str, value: float | None, what: str) -> None:
        bound(key, value, what, False)

    at_most("p99_latency_ms", facts.get("p99_ms"), "p99 latency (ms)")
    if gate.p99_latency_ratio_max is not None:
        limit, ratio, ci = gate.p99_latency_ratio_max, facts.get("p99_ratio"), facts.get("p99_ratio_ci")
        if ratio is None:
            checks.append(Check("p99_latency_ratio_max", limit, None, False, "p99 / reference p99: not measured"))
        else:
            # two p99s of the same model differ by a few percent from run to run: fail only when the
            # bootstrap interval of the ratio lies wholly above the limit
            slower = ratio > limit and (ci is None or ci[0] > limit)
            detail = f"p99 latency / reference p99 {ratio:.3f}" + (f" (95% CI {ci[0]:.3f} .. {ci[1]:.3f})" if ci else "")
            detail += (f" > {limit:g}" if slower else f" <= {limit:g}" if ratio <= limit
                       else f": above {limit:g} but the interval includes it (noise)")
            checks.append(Check("p99_latency_ratio_max", limit, ratio, not slower, detail))
    at_least("map50_95_min", facts.get("map50_95"), "mAP50-95")
    if gate.int8_max_drop is not None:
        if facts.get("rel_drop") is None:
            checks.append(Check("int8_max_drop", gate.int8_max_drop, None, False, "relative mAP50-95 drop against the "
                                "reference: not measured (the reference's mAP50-95 is 0 or undefined)"))
        else:
            from edgevision.quantize.workflow import judge  # the same rule as `edgevision quantize`

            ok, why = judge(facts["rel_drop"], facts.get("rel_drop_ci"), gate.int8_max_drop, int(facts.get("images") or 0))
            checks.append(Check("int8_max_drop", gate.int8_max_drop, facts["rel_drop"], ok, why + " (paired bootstrap "
                                "over images, against the reference)"))
    for key, which in (("escape_rate_max", "escape"), ("false_reject_rate_max", "false_reject")):
        if getattr(gate, key) is not None:
            checks.append(_rate_check(gate, key, which, facts))
    at_least("rpc_min", facts.get("rpc"), "rPC")
    if gate.rss_growth_mb_per_h_max is not None:
        limit, slope, growth = gate.rss_growth_mb_per_h_max, facts.get("rss_slope"), facts.get("rss_growth")
        if slope is None or growth is None:
            checks.append(Check("rss_growth_mb_per_h_max", limit, None, False, "RSS growth: not measured"))
        else:
            leak = bool(facts.get("rss_leak"))
            detail = f"RSS slope {slope:.1f} MB/hour, {growth:.1f} MB over the soak after warm-up: "
            detail += ("a leak (above the limit, and real growth)" if leak else f"<= {limit:g}" if slope <= limit
                       else f"above {limit:g} MB/hour but under the 4 MB growth floor (noise of a short soak)")
            checks.append(Check("rss_growth_mb_per_h_max", limit, slope, not leak, detail))
    at_most("crashes_max", facts.get("crashes"), "crashes", "{:.0f}")
    if gate.determinism:
        ok = facts.get("determinism") == "pass"
        checks.append(Check("determinism", True, ok, ok, "determinism suite " + str(facts.get("determinism"))))
    if gate.licence is not None and gate.licence.permissive_only:
        checks.append(_licence_check(gate.licence, facts.get("licence")))
    return checks


def _licence_check(rule: LicenceGate, fact: dict[str, Any] | None) -> Check:
    """``licence.permissive_only`` on the model's chain (``facts["licence"]``, `edgevision.licences.gate_facts`)."""
    if not fact or not fact.get("items"):
        return Check("licence", True, None, False, "licence chain: not measured (the model's metadata was not read)")
    from edgevision.licences import chain_from_facts

    chain = chain_from_facts(fact).accept(rule.accept, strict=False)  # one gate file serves many models
    ok = chain.verdict == "permissive"
    return Check("licence", True, ok, ok, "licence chain (training code, weights, dataset) " + chain.summary())


def _pct(v: float, limit: float | None = None) -> str:
    """``v`` as a percentage with 3 significant digits, more when those would print the limit itself."""
    for d in range(3, 8):
        text = f"{100 * v:.{d}g}"
        if limit is None or v == limit or text != f"{100 * limit:g}":
            break
    return text + "%"


def _rate_check(gate: Gate, key: str, which: str, facts: dict[str, Any]) -> Check:
    """The check of a rate limit (``which``: ``escape`` or ``false_reject``) on the point rate or, with
    ``bound: upper``, on its Clopper-Pearson 95% upper bound; the counts come from ``facts[which]``
    (`Rate.to_dict`) or ``escapes`` / ``defective_images`` (``false_rejects`` / ``defect_free_images``)."""
    from edgevision.evaluate.operating import limit_support, rate_of

    limit = float(getattr(gate, key))
    what = "escape rate" if which == "escape" else "false-reject rate"
    group = "defective" if which == "escape" else "defect-free"
    r = rate_of(facts, which)
    if r is None or r.n == 0:
        point = facts.get(f"{which}_rate")
        if r is not None:  # counted, but on no image
            return Check(key, limit, None, False, f"{what}: not measured (no {group} images in the split)")
        if point is None:
            return Check(key, limit, None, False, f"{what}: not measured")
        if gate.bound == "upper":  # a rate without its counts has no interval
            return Check(key, limit, None, False, f"{what} {point:.4g}: its upper bound is not measured (the counts "
                         f"of {group} images are missing)")
        ok = point <= limit  # an older facts document: the point rate alone, judged as it always was
        return Check(key, limit, point, ok, f"{what} {point:.4g} {'<=' if ok else '>'} {limit:g}")
    short = limit_support("escape" if which == "escape" else "false-reject", r.n, limit)
    upper = gate.bound == "upper"
    value = float(r.upper if upper else r.value)  # type: ignore[arg-type]
    ok = value <= limit
    detail = f"{what} {r.text()}: {'upper bound' if upper else 'point rate'} {_pct(value, limit)} " \
             f"{'<=' if ok else '>'} {_pct(limit)}"
    if short is not None:
        if upper:  # the limit cannot be shown on this split: say why in one line
            return Check(key, limit, value, False, f"{what} {r.text()}: {short}")
        detail += f" (warning: {short})"
    return Check(key, limit, value, ok, detail)


EXPLAIN: dict[str, tuple[str, str]] = {
    "p99_latency_ms": ("the slowest 1% of images take longer than the line allows on this box",
                       "a smaller input size (--imgsz), INT8 (edgevision quantize), or a faster box"),
    "p99_latency_ratio_max": ("the candidate is slower in the tail than the reference on this box",
                              "ship the reference (usually FP32), or quantize for this box's --target"),
    "map50_95_min": ("the model does not find the defects accurately enough",
                     "train longer or on more (and more varied) line images"),
    "int8_max_drop": ("the INT8 model loses more accuracy against FP32 than allowed",
                      "calibrate on more images (--n), a per-target recipe (--target), or ship FP32"),
    "escape_rate_max": ("too many defective parts would be accepted at the operating points",
                        "re-choose them (edgevision eval --max-escape-rate), or train on more defect images"),
    "false_reject_rate_max": ("too many good parts would be rejected at the operating points",
                              "re-choose them (edgevision eval --max-false-reject-rate), or add defect-free images"),
    "rpc_min": ("under noise, blur and bad light the model keeps too little of its clean accuracy",
                "train with stronger augmentation (--augment industrial or industrial-strong) and more varied "
                "images, or fix the camera conditions"),
    "rss_growth_mb_per_h_max": ("memory grows while the model runs: a leak would stop the line after hours",
                                "report it with reliability.json; run a longer --soak-seconds to confirm"),
    "crashes_max": ("the runtime crashed, answered wrongly under threads, or failed calls",
                    "see the bad_input, concurrency and soak sections of reliability.json"),
    "determinism": ("the same image does not always get the same answer",
                    "see the determinism section of reliability.json; pin --threads"),
    "licence": ("shipping the model in a closed product may break the licence of its training code, weights or "
                "data", "train with --backend torchvision from weights and data you may use commercially, or list "
                "the item in the gate's licence.accept after a legal review (see `edgevision licences MODEL`)"),
}
"""For each gate key: what a failure means and what would fix it (one line each, for summaries)."""


def explain(check: Check) -> str:
    """One line for a failed check: the key, what was measured, what it means, what would fix it."""
    meaning, fix = EXPLAIN.get(check.key, ("", ""))
    text = f"{check.key}: {check.detail}"
    if meaning:
        text += f" - {meaning}; to fix: {fix}"
    return text
