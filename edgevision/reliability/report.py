"""Markdown, self-contained HTML and JUnit XML views of a reliability report (``edgevision.reliability/1``)."""

from __future__ import annotations

import html
from typing import Any
from xml.etree import ElementTree as ET

from edgevision.bench.report import html_table, svg_lines

__all__ = ["html_report", "junit_xml", "markdown_report"]


def _f(v: Any, d: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{d}f}"
    return str(v)


def _rate_text(acc: dict[str, Any], which: str) -> str:
    """A rate with its count and exact 95% interval, ``0.8% (3/400; 95% CI 0.2-2.2%)``; the bare rate for a
    document without counts."""
    from edgevision.evaluate.operating import rate_of

    r = rate_of(acc, which)
    return r.text() if r is not None else _f(acc.get(f"{which}_rate"))


def _cost_text(acc: dict[str, Any]) -> str:
    """The expected cost per 1,000 parts with its interval, or ``-`` when the operating points are not priced."""
    c = acc.get("expected_cost")
    if not c:
        return "-"
    return f"{c['per_1000_parts']:.4g} (95% CI {c['lower']:.4g}-{c['upper']:.4g})"


def _accuracy_line(name: str, acc: dict[str, Any]) -> str:
    from edgevision.evaluate.operating import decisions_summary, rate_of

    rates = (decisions_summary(acc) if rate_of(acc, "escape") or rate_of(acc, "false_reject") else
             f"escape rate {_f(acc.get('escape_rate'))}, false-reject rate {_f(acc.get('false_reject_rate'))}")
    return (f"{name}: mAP50-95 {_f(acc['map50_95'])}, mAP50 {_f(acc['map50'])}, {rates} "
            f"({acc['thresholds']}).")


def _prices(doc: dict[str, Any]) -> str:
    c = next(v["expected_cost"] for v in doc["accuracy"].values() if v.get("expected_cost"))
    return html.escape(f"{c['cost_escape']:g} per escaped part, {c['cost_false_reject']:g} per falsely rejected "
                       f"part, defect rate {c['defect_rate']:.3g}"
                       + (" (the split's)" if c.get("defect_rate_from") == "split" else ""))


def _check_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    return [{"check": c["key"], "limit": _f(c["limit"]), "value": _f(c["value"], 4),
             "result": "PASS" if c["passed"] else "FAIL", "detail": c["detail"]} for c in doc["gate"]["checks"]]


def _suite_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name, s in doc["suites"].items():
        m = s["metrics"]
        if name == "soak":
            key = (f"{m.get('calls')} calls in {m.get('seconds', 0):.0f} s, {m.get('errors')} errors, RSS "
                   f"{_f(m.get('rss_start_mb'), 0)} -> {_f(m.get('rss_end_mb'), 0)} MB, slope "
                   f"{_f(m.get('rss_slope_mb_per_h'), 1)} MB/h, leak {_f(m.get('leak'))}")
        elif name == "robustness":
            key = f"clean mAP50-95 {_f(m.get('clean_map50_95'))}, mPC {_f(m.get('mpc'))}, rPC {_f(m.get('rpc'))}"
        elif name == "determinism":
            key = (f"{m.get('unstable_images')} unstable images, {m.get('thread_mismatches')} thread mismatches, "
                   f"max difference across threads {_f(m.get('max_thread_difference'), 6)}")
        elif name == "bad_input":
            cases = m.get("cases", [])
            key = f"{sum(1 for c in cases if c['ok'])}/{len(cases)} cases as expected, {m.get('crashes')} crashes"
        else:
            key = f"{m.get('calls')} calls on {m.get('workers')} threads, {m.get('wrong')} wrong, {m.get('errors')} errors"
        rows.append({"suite": name, "status": s["status"], "summary": key if m else "-",
                     "findings": "; ".join(s["findings"][:3]) or "-", "seconds": f"{s['seconds']:.1f}"})
    return rows


def markdown_report(doc: dict[str, Any]) -> str:
    m, ref = doc["model"], doc.get("reference")
    lines = [f"# Reliability: {m['name']} -> **{doc['verdict']}**", "",
             f"{doc['created']}; model sha256 {m['sha256'][:16]}, {m['precision']}"
             + (f"; reference {ref['name']} ({ref['precision']})" if ref else "")
             + f"; data {doc['data']['path']} split `{doc['data']['split']}` ({doc['data']['images']} images); "
             f"gate `{doc['gate']['name']}`.", "", "## Gate", ""]
    rows = _check_rows(doc)
    if rows:
        lines += ["| check | limit | value | result | detail |", "|---|---|---|---|---|"]
        lines += [f"| {r['check']} | {r['limit']} | {r['value']} | {r['result']} | {r['detail']} |" for r in rows]
    else:
        lines.append("The gate sets no threshold: nothing judged.")
    lines += ["", "## Suites", "", "| suite | status | summary | findings |", "|---|---|---|---|"]
    lines += [f"| {r['suite']} | {r['status']} | {r['summary']} | {r['findings']} |" for r in _suite_rows(doc)]
    lat = doc["latency"]["model"]["pipeline"]
    acc = doc["accuracy"]["model"]
    lines += ["", f"Latency (whole pipeline, single stream, {lat['n']} calls): p50 {lat['p50']:.2f} ms, "
              f"p99 {_f(lat['p99'], 2)} ms, max {lat['max']:.2f} ms. {_accuracy_line('Accuracy', acc)}"]
    if doc["accuracy"].get("reference"):
        lines += ["", _accuracy_line("Reference", doc["accuracy"]["reference"])]
    return "\n".join(lines) + "\n"


def html_report(doc: dict[str, Any]) -> str:
    """One self-contained page: verdict, gate table, suites, latency, accuracy, robustness, bad input, plots."""
    verdict = doc["verdict"]
    colour = "#2e7d32" if verdict == "PASS" else "#c62828"
    m, ref = doc["model"], doc.get("reference")
    lat_rows = [{"model": k, "calls": str(v["pipeline"]["n"]), "p50 ms": _f(v["pipeline"]["p50"], 2),
                 "p90 ms": _f(v["pipeline"]["p90"], 2), "p99 ms": _f(v["pipeline"]["p99"], 2),
                 "max ms": _f(v["pipeline"]["max"], 2), "run p50 ms": _f((v.get("session") or {}).get("p50"), 2),
                 "load s": _f(v.get("load_s"), 2), "RSS MB": _f(v.get("peak_rss_mb"), 0)}
                for k, v in doc["latency"].items()]
    priced = any(v.get("expected_cost") for v in doc["accuracy"].values())
    acc_rows = [{"model": k, "mAP50-95": _f(v["map50_95"]), "mAP50": _f(v["map50"]),
                 "escape rate": _rate_text(v, "escape"), "false-reject rate": _rate_text(v, "false_reject"),
                 **({"expected cost / 1,000 parts": _cost_text(v)} if priced else {}), "thresholds": v["thresholds"]}
                for k, v in doc["accuracy"].items()]
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>Reliability {html.escape(m['name'])}: {verdict}</title><style>"
             "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;"
             "margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
             "th{background:#f3f3f3}h2{font-size:17px;margin-top:28px}.verdict{font-size:26px;font-weight:bold}"
             "</style></head><body>",
             f"<h1>Reliability report: {html.escape(m['name'])}</h1>",
             f"<p class='verdict' id='verdict' style='color:{colour}'>{verdict}</p>",
             f"<p>{html.escape(doc['created'])} &middot; sha256 {html.escape(m['sha256'])} &middot; {m['precision']}"
             + (f" &middot; reference {html.escape(ref['name'])}" if ref else "")
             + f" &middot; gate {html.escape(str(doc['gate']['name']))} &middot; data "
             f"{html.escape(str(doc['data']['path']))} ({doc['data']['images']} images)</p>",
             "<h2>Gate</h2>", html_table(_check_rows(doc), "gate"),
             "<h2>Suites</h2>", html_table(_suite_rows(doc), "suites"),
             "<h2>Latency</h2>", html_table(lat_rows, "latency"),
             "<h2>Accuracy</h2>", html_table(acc_rows, "accuracy"),
             "<p>Rates: image level, at the model's operating points, with their exact (Clopper-Pearson) 95% "
             "intervals" + (f"; expected cost at {_prices(doc)}" if priced else "") + ".</p>"]
    s = doc["suites"]
    if "robustness" in s and s["robustness"]["metrics"].get("table"):
        rob = s["robustness"]["metrics"]
        sev = sorted({k for row in rob["table"].values() for k in row}, key=int)
        rows = [{"corruption": n, **{f"s{k}": _f(row.get(k)) for k in sev},
                 "mean": _f(rob["per_corruption"].get(n))} for n, row in rob["table"].items()]
        parts += ["<h2>Robustness (mAP50-95 by corruption and severity)</h2>",
                  f"<p>clean {_f(rob['clean_map50_95'])}, mPC {_f(rob['mpc'])}, rPC {_f(rob['rpc'])}</p>",
                  html_table(rows, "robustness"),
                  svg_lines("mAP50-95 under corruption", "severity", "mAP50-95",
                            [(n, [int(k) for k in sev], [row.get(k) for k in sev]) for n, row in rob["table"].items()],
                            "robustness")]
    if "bad_input" in s:
        rows = [{"case": c["case"], "expected": c["expected"], "outcome": c["outcome"], "ok": _f(c["ok"]),
                 "serving after": _f(c["serving_after"]), "message": c["message"]}
                for c in s["bad_input"]["metrics"].get("cases", [])]
        parts += ["<h2>Bad input</h2>", html_table(rows, "bad-input")]
    if "soak" in s and s["soak"]["metrics"].get("windows"):
        w = s["soak"]["metrics"]["windows"]
        t = [x["t_s"] for x in w]
        parts += ["<h2>Soak</h2>",
                  svg_lines("Soak: latency per window", "seconds", "ms",
                            [("p50", t, [x["p50_ms"] for x in w]), ("p99", t, [x["p99_ms"] for x in w])], "soak-latency"),
                  svg_lines("Soak: resident memory", "seconds", "MB", [("RSS", t, [x["rss_mb"] for x in w])],
                            "soak-rss", y_from_zero=False)]
    parts.append("</body></html>")
    return "\n".join(parts)


def junit_xml(doc: dict[str, Any]) -> str:
    """JUnit XML: test suite ``edgevision.reliability`` with one case per gate check and one per suite."""
    cases = []
    for c in doc["gate"]["checks"]:
        cases.append(("gate", c["key"], None if c["passed"] else c["detail"]))
    for name, s in doc["suites"].items():
        failed = s["status"] in ("fail", "error")
        cases.append(("suite", name, ("; ".join(s["findings"]) or s["status"]) if failed else None))
    root = ET.Element("testsuites", name="edgevision reliability")
    suite = ET.SubElement(root, "testsuite", name="edgevision.reliability", tests=str(len(cases)),
                          failures=str(sum(1 for c in cases if c[2] is not None)), errors="0", skipped="0",
                          timestamp=doc["created"])
    props = ET.SubElement(suite, "properties")
    for k, v in (("model", doc["model"]["name"]), ("sha256", doc["model"]["sha256"]), ("verdict", doc["verdict"]),
                 ("gate", str(doc["gate"]["name"]))):
        ET.SubElement(props, "property", name=k, value=v)
    for cls, name, failure in cases:
        case = ET.SubElement(suite, "testcase", classname=f"reliability.{cls}", name=name)
        if failure is not None:
            f = ET.SubElement(case, "failure", message=failure[:300], type="gate" if cls == "gate" else "suite")
            f.text = failure
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
