"""The release gate: thresholds in YAML (`Gate`), judged against a reliability run (`judge_gate`).

A gate may set any subset of its keys. Absolute latency limits depend on the box, so the shipped
``configs/gate/default.yaml`` judges the model against a reference model (``--reference``, usually the
FP32 export of the same weights) and leaves absolute limits to the user's own gate file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgevision.core.errors import ConfigError, short_repr, short_text

__all__ = ["Check", "Gate", "gate_dirs", "judge_gate", "load_gate", "resolve_gate", "suites_needed"]


class Gate(BaseModel):
    """Release thresholds; None (absent) = not judged.

    Attributes:
        p99_latency_ms: the model's single-stream p99, whole pipeline, at most this (box-specific).
        p99_latency_ratio_max: the model's p99 over the reference's p99, at most this (1.0: not slower).
        map50_95_min: COCO mAP50-95 on the split, at least this.
        int8_max_drop: relative mAP50-95 drop against the reference, at most this (0.01: 1%); as in
            ``edgevision quantize``, a drop above it fails only when its paired bootstrap interval excludes zero.
        escape_rate_max / false_reject_rate_max: image-level rates at the model's operating points.
        rpc_min: relative performance under corruption (mPC / clean mAP), at least this.
        rss_growth_mb_per_h_max: the soak's memory slope, at most this (also the soak's leak limit).
        crashes_max: exceptions other than clear errors, wrong answers under threads and failed calls in the
            soak, at most this many.
        determinism: True: the determinism suite must pass.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "gate"
    p99_latency_ms: float | None = Field(None, gt=0)
    p99_latency_ratio_max: float | None = Field(None, gt=0)
    map50_95_min: float | None = Field(None, ge=0, le=1)
    int8_max_drop: float | None = Field(None, ge=0, lt=1)
    escape_rate_max: float | None = Field(None, ge=0, le=1)
    false_reject_rate_max: float | None = Field(None, ge=0, le=1)
    rpc_min: float | None = Field(None, ge=0)
    rss_growth_mb_per_h_max: float | None = Field(None, ge=0)
    crashes_max: int | None = Field(None, ge=0)
    determinism: bool | None = None

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
    known = list(Gate.model_fields)
    for key in doc:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, 1) if len(str(key)) <= 200 else []
            raise ConfigError(f"{p}: unknown gate key {short_repr(key)}" + (f" (did you mean '{close[0]}'?)" if close else "")
                              + f"; known keys: {', '.join(known)}")
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
    at_most("escape_rate_max", facts.get("escape_rate"), "escape rate")
    at_most("false_reject_rate_max", facts.get("false_reject_rate"), "false-reject rate")
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
    return checks
