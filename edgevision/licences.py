"""The licence chain of what a user ships: training code, starting weights, dataset and runtime dependencies.

A detector on a factory box carries more than EdgeVision's Apache-2.0 licence:

- the **training code**: Ultralytics (AGPL-3.0; Ultralytics states its licence extends to the models trained
  with it), LibreYOLO's YOLOv9 (MIT) or torchvision's SSDlite (BSD-3-Clause);
- the **starting weights** (their licence is recorded by ``edgevision weights add``, see
  `edgevision.train.weights`; a model trained from scratch has none);
- the **dataset** (the recipe's ``licence``, ``commercial_use`` and ``research_only``; NEU-DET, DeepPCB and
  RailSem19 are research-only, MVTec AD and Severstal non-commercial);
- every **runtime dependency** as installed, or as wheels in the wheelhouse that goes to the box, read from
  the distribution metadata (``License-Expression``, else the ``License ::`` trove classifiers, else the
  ``License`` field, else the licence file's first recognisable heading). Nothing is downloaded.

`licence_chain` collects them into a `LicenceChain`; each `LicenceItem` has a category (`CATEGORIES`) and,
when not permissive, one line on what it means for a closed product (`meaning`). The model's own three
items are recorded in its ONNX metadata at export (``source.licences``, `licence_record`), so an exported
file, an INT8 copy of it, and the release gate (``licence: {permissive_only: true}``) know them without the
run folder. `write_sbom` writes a CycloneDX 1.6 JSON SBOM with cyclonedx-python-lib (the ``licences``
extra); everything else needs only the standard library and ``packaging``.

Where something was not recorded, the item says ``unknown (not recorded)``: nothing is guessed.
"""

from __future__ import annotations

import email.parser
import functools
import json
import logging
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Any

from edgevision.core.errors import ConfigError, EdgeVisionError, short_text

log = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES",
    "EXIT_NOT_PERMISSIVE",
    "EXIT_UNKNOWN",
    "ROLES",
    "SBOM_MISSING",
    "SCHEMA",
    "LicenceChain",
    "LicenceItem",
    "chain_from_facts",
    "chain_items",
    "classify",
    "gate_facts",
    "installed_items",
    "items_from_source",
    "licence_chain",
    "licence_record",
    "meaning",
    "model_items",
    "normalise",
    "sbom_available",
    "sbom_json",
    "wheelhouse_items",
    "write_sbom",
]

SCHEMA = "edgevision.licences/1"
"""The schema of ``edgevision licences --json``."""

PERMISSIVE, UNKNOWN, WEAK, COPYLEFT, NETWORK, NON_COMMERCIAL = (
    "permissive", "unknown", "weak-copyleft", "copyleft", "network-copyleft", "non-commercial")
CATEGORIES = (PERMISSIVE, UNKNOWN, WEAK, COPYLEFT, NETWORK, NON_COMMERCIAL)
"""Licence categories, least to most restrictive: an ``AND`` of licences takes the most restrictive part, an
``OR`` the least (the user may choose). ``unknown`` sits just above permissive: it is not shown to be free to
ship, but a known copyleft or non-commercial part says more."""

ROLES = {"code": "training code", "weights": "starting weights", "dataset": "dataset",
         "dependency": "runtime dependency"}
"""Item roles (the keys appear in JSON and are accepted by ``--accept``) and how the console names them."""

EXIT_NOT_PERMISSIVE = 3
"""``edgevision licences --permissive-only``: an item is copyleft or not licensed for commercial use."""
EXIT_UNKNOWN = 4
"""``edgevision licences --permissive-only``: nothing is known to be non-permissive, but some licence is unknown."""

UNRECORDED = "unknown (not recorded)"
NOT_INSTALLED = "unknown (not installed here)"

BUNDLED = {
    "opencv-python-headless": "its wheels bundle FFmpeg (LGPL-2.1) as shared libraries: ship its "
                              "LICENSE-3RD-PARTY.txt and leave those libraries replaceable",
    "opencv-python": "its wheels bundle FFmpeg (LGPL-2.1) and Qt (LGPL-3.0) as shared libraries: ship its "
                     "LICENSE-3RD-PARTY.txt and leave those libraries replaceable",
}
"""Third-party libraries a wheel bundles under another licence than the one it declares (a note, not a flag)."""

_MAX_TEXT = 200_000  # bytes read from a METADATA / licence file at most (a hostile archive cannot balloon it)


# ------------------------------------------------------------------------------------------ classification
_CLASSIFIERS = {
    "MIT License": "MIT", "MIT No Attribution License (MIT-0)": "MIT-0", "BSD License": "BSD",
    "Apache Software License": "Apache-2.0", "ISC License (ISCL)": "ISC",
    "Python Software Foundation License": "PSF-2.0", "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "Mozilla Public License 1.1 (MPL 1.1)": "MPL-1.1",
    "GNU General Public License (GPL)": "GPL", "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Library or Lesser General Public License (LGPL)": "LGPL",
    "GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "Eclipse Public License 1.0 (EPL-1.0)": "EPL-1.0", "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0", "zlib/libpng License": "Zlib",
    "The Unlicense (Unlicense)": "Unlicense", "Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "Universal Permissive License (UPL)": "UPL-1.0", "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
    "Public Domain": "public domain", "Other/Proprietary License": "proprietary",
}
"""Trove classifiers (after ``License :: [OSI Approved :: ]``) as SPDX ids where there is one."""

_ALIASES = {
    "mit": "MIT", "mit license": "MIT", "expat": "MIT", "bsd": "BSD", "bsd license": "BSD",
    "new bsd": "BSD-3-Clause", "new bsd license": "BSD-3-Clause", "modified bsd": "BSD-3-Clause",
    "revised bsd": "BSD-3-Clause", "3-clause bsd": "BSD-3-Clause", "3-clause bsd license": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause", "bsd-3": "BSD-3-Clause", "bsd 3-clause license": "BSD-3-Clause",
    "simplified bsd": "BSD-2-Clause", "2-clause bsd": "BSD-2-Clause", "bsd 2-clause": "BSD-2-Clause",
    "freebsd": "BSD-2-Clause", "bsd-2": "BSD-2-Clause",
    "apache": "Apache-2.0", "apache 2": "Apache-2.0", "apache 2.0": "Apache-2.0", "apache-2": "Apache-2.0",
    "apache license 2.0": "Apache-2.0", "apache license, version 2.0": "Apache-2.0", "asl 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license": "Apache-2.0",
    "psf": "PSF-2.0", "psfl": "PSF-2.0", "psf license": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "isc": "ISC", "isc license": "ISC", "mpl 2.0": "MPL-2.0", "mpl-2": "MPL-2.0", "zlib": "Zlib",
    "public domain": "public domain", "unlicense": "Unlicense", "cc0": "CC0-1.0",
}
"""Common free-text ``License`` fields (lower case) as SPDX ids."""

_TEXT_HEADINGS = (  # licence-file text: the first heading found wins (a file may quote others further down)
    (re.compile(r"GNU AFFERO GENERAL PUBLIC LICEN[CS]E", re.I), "AGPL-3.0"),
    (re.compile(r"GNU LESSER GENERAL PUBLIC LICEN[CS]E|GNU LIBRARY GENERAL PUBLIC", re.I), "LGPL"),
    (re.compile(r"GNU GENERAL PUBLIC LICEN[CS]E", re.I), "GPL"),
    (re.compile(r"Mozilla Public License,? (Version )?2\.0", re.I), "MPL-2.0"),
    (re.compile(r"Eclipse Public License", re.I), "EPL-2.0"),
    (re.compile(r"Apache License,?\s+Version 2\.0", re.I), "Apache-2.0"),
    (re.compile(r"Permission is hereby granted, free of charge", re.I), "MIT"),
    (re.compile(r"Redistribution and use in source and binary forms", re.I), "BSD"),
    (re.compile(r"Permission to use, copy, modify, and(/or)? distribute this software for any", re.I), "ISC"),
    (re.compile(r"free and unencumbered software released into the public domain", re.I), "Unlicense"),
)

_NETWORK = re.compile(r"\bAGPL|AFFERO|\bSSPL|SERVER SIDE PUBLIC", re.I)
_WEAK_LGPL = re.compile(r"\bLGPL|LESSER GENERAL|LIBRARY GENERAL", re.I)
_STRONG = re.compile(r"\bGPL|GENERAL PUBLIC LICEN[CS]E|\bEUPL|\bOSL-|\bCECILL-(1|2)|CC-BY-SA|SHARE-?ALIKE|\bODBL|"
                     r"SLEEPYCAT|\bRPL-", re.I)
_NON_COMMERCIAL = re.compile(r"(^|[-\s])NC([-\s]|$)|NON-?COMMERCIAL|RESEARCH|ACADEMIC(?! FREE)|PERSONAL USE|COMPETITION|"
                             r"EVALUATION ONLY", re.I)
_WEAK_OTHER = re.compile(r"\bMPL|MOZILLA|\bEPL|ECLIPSE PUBLIC|\bCDDL|\bCPL-|\bMS-RL|CECILL-C|\bAPSL|\bLGPLLR", re.I)
_PERMISSIVE = re.compile(
    r"^(MIT|MIT-0|MIT-CMU|X11|BSD|0BSD|APACHE|ISC|ZLIB|PSF|PYTHON|CNRI-PYTHON|UNLICENSE|CC0|CC-BY-\d|BSL-1|BOOST|"
    r"HPND|NCSA|UPL|POSTGRESQL|ZPL|W3C|WTFPL|UNICODE|MULANPSL|BLUEOAK|AFL|CURL|LIBPNG|FTL|PUBLIC DOMAIN|EXPAT|"
    r"ARTISTIC-2|OFL|NONE \(TRAINED FROM SCRATCH\))(?=$|[-\s.,;()0-9])", re.I)
_RANK = {c: i for i, c in enumerate(CATEGORIES)}


def normalise(text: str | None) -> str:
    """A declared licence as an SPDX id or expression where it is recognisable (``"MIT License"`` -> ``MIT``,
    ``"3-Clause BSD License"`` -> ``BSD-3-Clause``), else the text itself, whitespace folded and shortened."""
    t = " ".join(str(text or "").split())
    if not t:
        return ""
    low = t.lower().removesuffix(".")
    for cut in ("", " license", " licence"):
        key = low.removesuffix(cut) if cut else low
        if key in _ALIASES:
            return _ALIASES[key]
    m = re.match(r"^(A|L)?GPL\s*(v\s*|-?)(\d)(\.\d)?(\+| or later)?$", t, re.I)
    if m and not re.match(r"^(A|L)?GPL-\d\.\d$", t):  # GPLv3+, LGPL v2.1, AGPL3; an SPDX id stays as written
        prefix = (m.group(1) or "").upper() + "GPL"
        version = m.group(3) + (m.group(4) or ".0")
        return f"{prefix}-{version}-{'or-later' if m.group(5) else 'only'}"
    return short_text(t, 120)


def _category_of_id(lid: str) -> str:
    if _NETWORK.search(lid):
        return NETWORK
    if _WEAK_LGPL.search(lid):
        return WEAK
    if _NON_COMMERCIAL.search(lid):
        return NON_COMMERCIAL
    if _STRONG.search(lid):
        return COPYLEFT
    if _WEAK_OTHER.search(lid):
        return WEAK
    if _PERMISSIVE.search(lid):
        return PERMISSIVE
    return UNKNOWN


def classify(text: str | None) -> str:
    """The category (`CATEGORIES`) of a licence: an SPDX id or expression (``AND`` takes the most restrictive
    part, ``OR`` the least, ``WITH`` an exception keeps the licence's own category), or free text (matched on
    its words: ``CC-BY-NC-SA-4.0`` and "research use only" are non-commercial). Empty or unrecognised:
    ``unknown``."""
    t = normalise(text)
    if not t or t.lower().startswith(("unknown", "unspecified", "proprietary", "see ", "other", "dual")):
        return UNKNOWN
    tokens = re.findall(r"\(|\)|[^\s()]+", t)
    try:
        pos, cat = _parse_or(tokens, 0)
        if pos == len(tokens):
            return cat
    except (IndexError, ValueError):
        pass
    return _category_of_id(t)


def _parse_or(tokens: list[str], i: int) -> tuple[int, str]:
    i, cat = _parse_and(tokens, i)
    while i < len(tokens) and tokens[i].upper() == "OR":
        i, other = _parse_and(tokens, i + 1)
        cat = min(cat, other, key=_RANK.__getitem__)
    return i, cat


def _parse_and(tokens: list[str], i: int) -> tuple[int, str]:
    i, cat = _parse_one(tokens, i)
    while i < len(tokens) and tokens[i].upper() == "AND":
        i, other = _parse_one(tokens, i + 1)
        cat = max(cat, other, key=_RANK.__getitem__)
    return i, cat


def _parse_one(tokens: list[str], i: int) -> tuple[int, str]:
    tok = tokens[i]
    if tok == "(":
        i, cat = _parse_or(tokens, i + 1)
        if tokens[i] != ")":
            raise ValueError("unbalanced")
        i += 1
    elif tok in (")",) or tok.upper() in ("AND", "OR", "WITH") or not re.fullmatch(r"[A-Za-z0-9.+:-]+", tok):
        raise ValueError(tok)
    else:
        cat, i = _category_of_id(tok), i + 1
    if i < len(tokens) and tokens[i].upper() == "WITH":
        i += 2  # an exception (Classpath, GCC runtime, LLVM) only loosens the licence it follows
        if i > len(tokens):
            raise ValueError("WITH without an exception")
    return i, cat


_MEANING = {
    NETWORK: "AGPL: distributing it, or letting others use it over a network, obliges you to publish the complete "
             "source of the product that includes it under the AGPL; a closed product needs a commercial licence",
    COPYLEFT: "GPL: distributing a product that includes or links it obliges you to publish the whole product's "
              "source under the same licence; keep it out of a closed product",
    "LGPL": "LGPL: used unmodified as a separate library: keep it replaceable (no static linking) and ship its "
            "licence; changes to it must be published",
    "MPL": "MPL: file-level copyleft: ship its licence and the source of its files (with your changes to them); "
           "your own files stay closed",
    "EPL": "EPL: module-level copyleft: ship its licence and offer its source (with your changes to it); your "
           "separate modules stay closed",
    WEAK: "weak copyleft: ship its licence and publish changes to it; your own code stays closed",
    NON_COMMERCIAL: "not licensed for commercial use: a product needs the rights holder's written permission, or "
                    "retrain on data and weights you may use",
    UNKNOWN: "licence not known: find it out before shipping (it is not assumed permissive)",
}


_WEAK_FAMILIES = (("LGPL", _WEAK_LGPL), ("MPL", re.compile(r"\bMPL|MOZILLA", re.I)),
                  ("EPL", re.compile(r"\bEPL|ECLIPSE", re.I)))


def meaning(category: str, licence: str = "") -> str:
    """One line: what ``category`` (of ``licence``) means for a closed product; empty for permissive."""
    if category == WEAK:
        family = next((f for f, rx in _WEAK_FAMILIES if rx.search(licence)), WEAK)
        return _MEANING[family]
    return _MEANING.get(category, "")


# ------------------------------------------------------------------------------------------ items and chains
@dataclass(frozen=True)
class LicenceItem:
    """One link of the chain.

    Attributes:
        role: a key of `ROLES`; name: the distribution, weights, dataset or backend; licence: as declared
        (an SPDX id or expression where recognisable); category: one of `CATEGORIES`; version: a
        distribution's version; source: where the licence was read (``License-Expression``, ``classifier``,
        ``recipe neu-det``, ``model metadata``, ...); note: further facts (origin, bundled libraries);
        accepted: listed in ``--accept`` / the gate's ``licence.accept`` (a reviewed exception).
    """

    role: str
    name: str
    licence: str
    category: str
    version: str | None = None
    source: str = ""
    note: str = ""
    accepted: bool = False

    @property
    def blocking(self) -> bool:
        """Not permissive and not accepted."""
        return self.category != PERMISSIVE and not self.accepted

    def meaning(self) -> str:
        return meaning(self.category, self.licence)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meaning": self.meaning()}


@dataclass
class LicenceChain:
    """Every item of what would ship, and the verdict.

    Attributes:
        items: model items first (training code, weights, dataset), then the runtime dependencies.
        subject: what was read (``model``, ``kind``, ``deploy``, ``extras``).
        notes: facts about the chain as a whole (e.g. a dependency that is not installed).
    """

    items: list[LicenceItem]
    subject: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``permissive`` (every item permissive or accepted), ``unknown`` (only unknown licences stand in the
        way) or ``not-permissive``."""
        blocking = self.flags()
        if not blocking:
            return "permissive"
        return "unknown" if all(i.category == UNKNOWN for i in blocking) else "not-permissive"

    def flags(self) -> list[LicenceItem]:
        """The items that are not permissive and not accepted, most restrictive first."""
        return sorted((i for i in self.items if i.blocking), key=lambda i: -_RANK[i.category])

    def exit_code(self, permissive_only: bool) -> int:
        """0, or with ``permissive_only`` `EXIT_NOT_PERMISSIVE` / `EXIT_UNKNOWN` by the verdict."""
        if not permissive_only or self.verdict == "permissive":
            return 0
        return EXIT_UNKNOWN if self.verdict == "unknown" else EXIT_NOT_PERMISSIVE

    def summary(self) -> str:
        """One line: the verdict and the items in its way."""
        flags = self.flags()
        if not flags:
            accepted = [i.name for i in self.items if i.accepted]
            return "permissive" + (f" (accepted after review: {', '.join(accepted)})" if accepted else "")
        what = "; ".join(f"{i.name} ({ROLES.get(i.role, i.role)}) {i.licence} [{i.category}]" for i in flags[:6])
        more = f"; and {len(flags) - 6} more" if len(flags) > 6 else ""
        return f"{self.verdict}: {what}{more}"

    def accept(self, names: Iterable[str], *, strict: bool = True) -> LicenceChain:
        """A copy with the items named in ``names`` (an item's name, or a role key of `ROLES` for all its items)
        marked accepted.

        Raises:
            UnknownNameError: with ``strict``, a name that matches no item (the options are listed).
        """
        wanted = {_canon(n) for n in names if str(n).strip()}
        if not wanted:
            return self
        names_here = {_canon(i.name) for i in self.items} | set(ROLES)
        unknown = sorted(wanted - names_here)
        if strict and unknown:
            from edgevision.core.errors import UnknownNameError

            raise UnknownNameError("--accept item", unknown[0], names_here)
        items = [replace(i, accepted=True) if _canon(i.name) in wanted or i.role in wanted else i for i in self.items]
        return LicenceChain(items, dict(self.subject), list(self.notes))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "subject": self.subject, "verdict": self.verdict,
                "permissive": self.verdict == "permissive", "summary": self.summary(),
                "items": [i.to_dict() for i in self.items],
                "flags": [{k: d[k] for k in ("role", "name", "version", "licence", "category", "meaning")}
                          for d in (i.to_dict() for i in self.flags())],
                "notes": list(self.notes)}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", str(name).strip().lower())


# ------------------------------------------------------------------------------------------ the model's items
def _code_item(backend: str | None, declared: str | None = None, source: str = "training backend") -> LicenceItem:
    if backend == "ultralytics":
        lic = normalise(declared) if declared and classify(declared) != UNKNOWN else "AGPL-3.0"
        return LicenceItem("code", "ultralytics", lic, classify(lic), source=source,
                           note="Ultralytics states that its licence extends to models trained with its code; "
                                "an Ultralytics Enterprise licence lifts it")
    if backend == "torchvision":
        return LicenceItem("code", "torchvision", "BSD-3-Clause", PERMISSIVE, source=source,
                           note="SSDlite320-MobileNetV3 built by torchvision")
    if backend == "libreyolo":
        return LicenceItem("code", "libreyolo", "MIT", PERMISSIVE, source=source,
                           note="LibreYOLO's YOLOv9, after the authors' MIT re-release (MultimediaTechLab/YOLO), not "
                                "the GPL-3.0 WongKinYiu code")
    name = short_text(str(backend), 60) if backend else "training code"
    return LicenceItem("code", name, UNRECORDED, UNKNOWN, note="the training backend is not recorded")


def _weights_item(spec: Mapping[str, Any] | None) -> LicenceItem:
    if not spec:
        return LicenceItem("weights", "starting weights", UNRECORDED, UNKNOWN, note="no model.json")
    if spec.get("kind") == "arch":
        name = short_text(str(spec.get("arch") or spec.get("source") or "architecture"), 80)
        return LicenceItem("weights", Path(name).name, "none (trained from scratch)", PERMISSIVE, source="model.json",
                           note="no pretrained weights: only the training code's licence applies to the architecture")
    name = spec.get("registered") or Path(str(spec.get("path") or spec.get("source") or "weights")).name
    lic, source = spec.get("licence"), "model.json"
    if (not lic or str(lic).lower().startswith("unknown")) and spec.get("sha256"):
        from edgevision.train.weights import list_weights

        entry = next((e for e in list_weights() if e.sha256 == spec["sha256"]), None)
        if entry is not None:
            lic, source, name = entry.licence, f"weights registry ({entry.name})", entry.name
    lic = normalise(str(lic)) if lic else UNRECORDED
    origin = spec.get("origin")
    return LicenceItem("weights", short_text(str(name), 80), lic, classify(lic), source=source,
                       note=f"origin: {short_text(str(origin), 160)}" if origin else "")


def _dataset_item(dataset: Mapping[str, Any] | None) -> LicenceItem:
    if not dataset:
        return LicenceItem("dataset", "training data", UNRECORDED, UNKNOWN, note="no dataset.json")
    recipe = dataset.get("recipe")
    name = short_text(str(recipe or Path(str(dataset.get("source") or "training data")).name or "training data"), 80)
    lic, source, note = dataset.get("licence"), "dataset.json", ""
    commercial, research = dataset.get("commercial_use"), dataset.get("research_only")
    if recipe:
        from edgevision.recipes import get_recipe

        try:
            r = get_recipe(str(recipe))
        except EdgeVisionError:
            log.warning("dataset.json names the recipe '%s', which this EdgeVision does not know", recipe)
        else:
            lic, commercial, research, source = r.licence, r.commercial_use, r.research_only, f"recipe {r.name}"
            note = r.licence_note or ""
    if not lic:
        return LicenceItem("dataset", name, UNRECORDED, UNKNOWN, source="dataset.json",
                           note="no recipe or licence recorded; if these are your own images, accept the item "
                                "(--accept dataset)")
    cat = classify(str(lic))
    if research or commercial is False:
        cat = NON_COMMERCIAL
        note = ("research use only" if research else "not licensed for commercial use") + (f"; {note}" if note else "")
    return LicenceItem("dataset", name, normalise(str(lic)), cat, source=source, note=" ".join(note.split()))


def chain_items(backend: str | None, spec: Mapping[str, Any] | None,
                dataset: Mapping[str, Any] | None) -> list[LicenceItem]:
    """The model's three items from a run's facts: the training backend, ``model.json`` (the resolved ``--model``:
    `edgevision.train.weights.ModelSpec`; an unregistered file is looked up in the weights registry by sha256)
    and ``dataset.json`` (its recipe's licence flags)."""
    return [_code_item(backend), _weights_item(spec), _dataset_item(dataset)]


def licence_record(items: Sequence[LicenceItem]) -> list[dict[str, Any]]:
    """What the ONNX metadata records under ``source.licences``: role, name, licence, category, source, note."""
    return [{k: v for k, v in asdict(i).items() if k not in ("accepted", "version")} for i in items]


def items_from_source(source: Mapping[str, Any]) -> list[LicenceItem]:
    """The model's items from its metadata ``source``: the ``licences`` record when there is one (EdgeVision
    exports record it), else what older exports and foreign files say (``backend``, ``licence``); what is missing
    is ``unknown (not recorded)``."""
    rec = source.get("licences")
    if isinstance(rec, list):
        items = [_item_from_record(r) for r in rec if isinstance(r, Mapping)]
        if items:
            return items
    backend = source.get("backend")
    backend = str(backend) if backend else None
    declared = source.get("licence")
    if source.get("origin") == "foreign" or source.get("adopted"):
        code = _code_item(backend, str(declared) if declared else None, source="the file's Ultralytics metadata")
        weights = LicenceItem("weights", "starting weights", UNRECORDED, UNKNOWN,
                              note="a file EdgeVision did not export records no weights")
    else:
        code = _code_item(backend)
        text = str(declared or "")
        if "no weights" in text:
            weights = LicenceItem("weights", str(source.get("arch") or "architecture"), "none (trained from scratch)",
                                  PERMISSIVE, source="model metadata")
        elif text and not text.lower().startswith("unknown"):
            lic = normalise(re.sub(r"\s*\(Ultralytics model\)$", "", text))
            weights = LicenceItem("weights", short_text(str(source.get("registered") or source.get("weights_origin")
                                                            or source.get("weights") or "weights"), 80),
                                  lic, classify(lic), source="model metadata")
        else:
            weights = LicenceItem("weights", "starting weights", UNRECORDED, UNKNOWN)
    h = source.get("dataset_hash")
    data = LicenceItem("dataset", "training data", UNRECORDED, UNKNOWN,
                       note=(f"the metadata records only the dataset's hash {str(h)[:12]}; " if h else "")
                       + "re-export from the run folder to record its licence")
    return [code, weights, data]


def _item_from_record(r: Mapping[str, Any]) -> LicenceItem:
    lic = short_text(str(r.get("licence") or UNRECORDED), 160)
    cat = str(r.get("category"))
    role = str(r.get("role"))
    return LicenceItem(role if role in ROLES else "code", short_text(str(r.get("name") or "?"), 80), lic,
                       cat if cat in CATEGORIES else classify(lic), source=short_text(str(r.get("source") or ""), 80),
                       note=short_text(str(r.get("note") or ""), 300))


def gate_facts(source: Mapping[str, Any]) -> dict[str, Any]:
    """The release gate's ``licence`` fact for a model's metadata ``source``: ``items`` (dicts) and ``verdict``."""
    chain = LicenceChain(items_from_source(source))
    return {"items": [i.to_dict() for i in chain.items], "verdict": chain.verdict}


def chain_from_facts(fact: Mapping[str, Any]) -> LicenceChain:
    """The `LicenceChain` of a `gate_facts` document."""
    return LicenceChain([_item_from_record(d) for d in fact.get("items") or [] if isinstance(d, Mapping)])


def model_items(path: Path | str) -> tuple[list[LicenceItem], str]:
    """The model's items and its kind (``onnx`` or ``run``) from an exported ONNX file or a run folder (a
    checkpoint inside a run's ``weights/`` means its run).

    Raises:
        ConfigError: missing path, not ONNX, no metadata, not a run folder (one line naming the file and the fix).
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".pt", ".pth") and p.parent.name == "weights" \
            and (p.parent.parent / "model.json").is_file():
        p = p.parent.parent
    if p.is_dir():
        if not any((p / f).is_file() for f in ("model.json", "dataset.json", "config.yaml")):
            raise ConfigError(f"{p}: not a run folder (no model.json, dataset.json or config.yaml); give a run folder "
                              "written by `edgevision train` or an exported .onnx")
        from edgevision.export.source import read_run_json

        spec, dataset = read_run_json(p / "model.json"), read_run_json(p / "dataset.json")
        return chain_items(_run_backend(p, spec), spec, dataset), "run"
    if not p.exists():
        raise ConfigError(f"{p}: not found; give an exported .onnx or a run folder")
    if p.suffix.lower() != ".onnx":
        raise ConfigError(f"{p}: expected an exported .onnx or a run folder, got '{p.suffix or p.name}'"
                          + (" (a checkpoint outside a run folder records no licences: give its run folder)"
                             if p.suffix.lower() in (".pt", ".pth") else ""))
    return items_from_source(_onnx_source(p)), "onnx"


def _onnx_source(path: Path) -> dict[str, Any]:
    from edgevision.runtime.metadata import METADATA_KEY
    from edgevision.runtime.props import ProtoError, metadata_props

    try:
        data = path.read_bytes()
        if not data:
            raise ProtoError("the file is empty")
        props = metadata_props(data)
    except (ProtoError, OSError) as e:
        raise ConfigError(f"{path}: not a readable ONNX file ({short_text(str(e), 120)}); give a model written by "
                          "`edgevision export`") from e
    if METADATA_KEY in props:
        try:
            doc = json.loads(props[METADATA_KEY])
        except ValueError as e:
            raise ConfigError(f"{path}: its '{METADATA_KEY}' metadata is not JSON; export the model again") from e
        source = doc.get("source") if isinstance(doc, dict) else None
        return dict(source) if isinstance(source, dict) else {}
    if "license" in props or props.get("author", "").startswith("Ultralytics"):
        return {"origin": "foreign", "backend": "ultralytics" if props.get("author", "").startswith("Ultralytics")
                else None, "licence": props.get("license")}
    raise ConfigError(f"{path}: no EdgeVision or Ultralytics metadata, so its training code, weights and data are "
                      "unknown; export it with `edgevision export`, or give its run folder")


def _run_backend(run: Path, spec: Mapping[str, Any] | None) -> str | None:
    cfg = run / "config.yaml"
    if cfg.is_file():
        from edgevision.core.safeload import load_yaml

        doc = load_yaml(cfg, "run config")
        if isinstance(doc, dict) and doc.get("backend"):
            return str(doc["backend"])
    from edgevision.train.weights import LIBREYOLO_ARCHS, TORCHVISION_ARCHS

    if spec and spec.get("arch") in TORCHVISION_ARCHS:
        return "torchvision"
    if spec and spec.get("arch") in LIBREYOLO_ARCHS:
        return "libreyolo"
    return None


# ------------------------------------------------------------------------------------------ distributions
def _licence_of(meta: Message | Any, read_file: Callable[[str], str | None]) -> tuple[str, str]:
    """``(licence, where it was read)`` from a distribution's core metadata, in the order: License-Expression,
    trove classifiers, License field, licence file."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return short_text(" ".join(expr.split()), 160), "License-Expression"
    found = []
    for c in meta.get_all("Classifier") or []:
        parts = [s.strip() for s in str(c).split("::")]
        if parts[0] != "License" or len(parts) < 2 or parts[-1] == "OSI Approved":
            continue
        found.append(_CLASSIFIERS.get(parts[-1]) or _bracketed(parts[-1]))
    if found:
        return " OR ".join(dict.fromkeys(found)), "classifier"
    text = str(meta.get("License") or "").strip()
    declared: tuple[str, str] | None = None
    if text and text.upper() not in ("UNKNOWN", "NONE"):
        if len(text) <= 120 and "\n" not in text:
            declared = normalise(text), "License field"
        elif _heading(text):
            declared = str(_heading(text)), "License field (text)"
        if declared and classify(declared[0]) != UNKNOWN:
            return declared
    for name in meta.get_all("License-File") or []:  # "see LICENSE", or nothing declared: the file's heading
        heading = _heading(read_file(str(name)) or "")
        if heading:
            return heading, f"licence file {short_text(str(name), 60)}"
    return declared or ("unknown (not declared)", "")


def _bracketed(classifier: str) -> str:
    m = re.search(r"\(([A-Za-z0-9.+ -]+)\)\s*$", classifier)
    return m.group(1).replace(" ", "-") if m else classifier


def _heading(text: str) -> str | None:
    head = text[:5000]
    hits = [(m.start(), lid) for rx, lid in _TEXT_HEADINGS if (m := rx.search(head))]
    return min(hits)[1] if hits else None


def _dist_item(name: str, version: str | None, meta: Message | Any, read_file: Callable[[str], str | None],
               note: str = "") -> LicenceItem:
    lic, source = _licence_of(meta, read_file)
    bundled = BUNDLED.get(_canon(name))
    note = "; ".join(n for n in (note, bundled) if n)
    return LicenceItem("dependency", name, lic, classify(lic), version=version, source=source, note=note)


def _requirement_tools() -> tuple[Any, Any]:
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        raise ConfigError("reading the runtime's requirements needs the 'packaging' distribution: pip install "
                          "packaging (or give the wheelhouse you ship: --deploy DIR)") from None
    return Requirement, InvalidRequirement


def installed_items(extras: Sequence[str] = ()) -> tuple[list[LicenceItem], list[str]]:
    """Every distribution the runtime install needs, as installed here: ``edgevision`` and the closure of its
    requirements for ``extras`` (markers evaluated for this interpreter and platform), with their licences; and
    the extras used. Without an onnxruntime flavour among ``extras`` the installed flavour is added (else
    ``onnxruntime``). A required distribution that is not installed is an ``unknown`` item saying so.

    Raises:
        ConfigError: EdgeVision not installed as a distribution, no ``packaging``, an unknown extra.
        UnknownNameError: an extra EdgeVision does not declare.
    """
    from importlib import metadata as md

    requirement, invalid = _requirement_tools()
    try:
        root = md.distribution("edgevision")
    except md.PackageNotFoundError:
        raise ConfigError("edgevision is not installed as a distribution, so the runtime's requirements cannot be "
                          "read: pip install -e . (or scripts/install.sh), or give a wheelhouse with --deploy DIR") \
            from None
    declared = {_canon(e): str(e) for e in root.metadata.get_all("Provides-Extra") or []}
    wanted = [_canon(e) for e in extras if str(e).strip()]
    for e in wanted:
        if e not in declared:
            from edgevision.core.errors import UnknownNameError

            raise UnknownNameError("--extra", e, sorted(declared))
    flavours = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")
    if not any(e in flavours for e in wanted):
        installed = [f for f in flavours if _installed(md, f)]
        wanted.insert(0, installed[0] if installed else "onnxruntime")
    wanted = list(dict.fromkeys(wanted))
    queue: list[tuple[str, frozenset[str], str]] = [("edgevision", frozenset(wanted), "")]
    done: dict[str, set[str]] = {}
    found: dict[str, LicenceItem] = {}
    missing: dict[str, tuple[str, str]] = {}
    while queue:
        name, ex, parent = queue.pop(0)
        key = _canon(name)
        if key in done and ex <= done[key]:
            continue
        done.setdefault(key, set()).update(ex)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.setdefault(key, (name, parent))
            continue
        dist_name = str(dist.name or name)
        if key not in found:
            found[key] = _dist_item(dist_name, dist.version, dist.metadata, functools.partial(_read_dist_file, dist))
        for raw in dist.requires or []:
            try:
                req = requirement(raw)
            except invalid:
                log.warning("%s: requirement %r not understood; skipped", name, raw)
                continue
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in sorted(ex | {""})):
                continue
            queue.append((req.name, frozenset(_canon(e) for e in req.extras), dist_name))
    items = [found.pop("edgevision")] if "edgevision" in found else []
    items += sorted(found.values(), key=lambda i: _canon(i.name))
    for _, (name, parent) in sorted(missing.items()):
        items.append(LicenceItem("dependency", name, NOT_INSTALLED, UNKNOWN,
                                 note=f"required by {parent}; not installed in this environment: read the wheelhouse "
                                      "you ship with --deploy"))
    return items, wanted


def _installed(md: Any, name: str) -> bool:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True


def _read_dist_file(dist: Any, name: str) -> str | None:
    for rel in (f"licenses/{name}", name):
        try:
            text = dist.read_text(rel)
        except (OSError, ValueError):
            text = None
        if text:
            return text[:_MAX_TEXT]
    return None


def wheelhouse_items(folder: Path | str) -> list[LicenceItem]:
    """Every wheel (and source archive) in ``folder`` with the licence its metadata declares, read from the archive
    (``*.dist-info/METADATA``, an sdist's ``PKG-INFO``); nothing is installed. One item per name and version.

    Raises:
        ConfigError: not a folder, no wheels in it, an unreadable archive (one line naming the file and the fix).
    """
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError(f"--deploy {d}: not a folder; give the wheelhouse that goes to the box "
                          "(deploy/build-wheelhouse.sh OUT writes one)")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.lower().endswith((".whl", ".tar.gz", ".zip")))
    if not files:
        raise ConfigError(f"--deploy {d}: no wheels (*.whl) or source archives in it; build it with "
                          f"deploy/build-wheelhouse.sh {d} (or pip download -d {d} ...)")
    items: dict[tuple[str, str], LicenceItem] = {}
    for f in files:
        try:
            item = _archive_item(f)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, KeyError, ValueError, EOFError) as e:
            raise ConfigError(f"{f}: not a readable wheel or source archive ({short_text(str(e), 120)}); download "
                              "it again (pip download --no-deps -d DIR NAME==VERSION) or remove it") from e
        items.setdefault((_canon(item.name), item.version or ""), item)
    return [items[k] for k in sorted(items)]


def _archive_item(path: Path) -> LicenceItem:
    name = path.name
    if name.lower().endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            metas = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if not metas:
                raise KeyError("no *.dist-info/METADATA")
            stem = _canon(name.split("-")[0])
            meta_name = next((n for n in metas if _canon(n.split("-")[0]) == stem), metas[0])
            base = meta_name.rsplit("/", 1)[0]
            meta = _parse_metadata(_zip_read(z, meta_name))

            def read_file(f: str) -> str | None:
                for rel in (f"{base}/licenses/{f}", f"{base}/{f}"):
                    if rel in z.NameToInfo:
                        return _zip_read(z, rel).decode("utf-8", errors="replace")
                return None

            return _dist_item(str(meta.get("Name") or stem), meta.get("Version"), meta, read_file)
    if name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            infos = [n for n in z.namelist() if re.fullmatch(r"[^/]+/PKG-INFO", n)]
            if not infos:
                raise KeyError("no PKG-INFO")
            top = infos[0].split("/")[0]
            meta = _parse_metadata(_zip_read(z, infos[0]))

            def read_zip_file(f: str) -> str | None:
                rel = f"{top}/{f}"
                return _zip_read(z, rel).decode("utf-8", errors="replace") if rel in z.NameToInfo else None

            return _dist_item(str(meta.get("Name") or top), meta.get("Version"), meta, read_zip_file,
                              note="source archive")
    with tarfile.open(path, "r:*") as t:
        members = {m.name: m for m in t.getmembers() if m.isfile()}
        info = next((m for n, m in members.items() if len(PurePosixPath(n).parts) == 2 and n.endswith("/PKG-INFO")),
                    None)
        if info is None:
            raise KeyError("no PKG-INFO")
        top = info.name.split("/")[0]

        def tar_read(m: tarfile.TarInfo) -> bytes:
            if m.size > _MAX_TEXT * 50:
                raise ValueError(f"{m.name} is {m.size} bytes")
            fh = t.extractfile(m)
            return fh.read() if fh is not None else b""

        meta = _parse_metadata(tar_read(info))

        def read_tar_file(f: str) -> str | None:
            m = members.get(f"{top}/{f}")
            return tar_read(m).decode("utf-8", errors="replace")[:_MAX_TEXT] if m is not None else None

        return _dist_item(str(meta.get("Name") or top), meta.get("Version"), meta, read_tar_file,
                          note="source archive")


def _zip_read(z: zipfile.ZipFile, name: str) -> bytes:
    info = z.getinfo(name)
    if info.file_size > _MAX_TEXT * 50:
        raise ValueError(f"{name} is {info.file_size} bytes")
    with z.open(info) as f:
        return f.read(_MAX_TEXT * 50)


def _parse_metadata(data: bytes) -> Message:
    return email.parser.BytesParser().parsebytes(data, headersonly=False)


# ------------------------------------------------------------------------------------------ the whole chain
def licence_chain(model: Path | str | None = None, *, deploy: Path | str | None = None,
                  extras: Sequence[str] = (), accept: Sequence[str] = ()) -> LicenceChain:
    """The chain of what would ship: ``model``'s items (an exported ONNX file or a run folder), then the runtime
    dependencies: the wheels in ``deploy``, else the runtime install's closure in this environment for ``extras``.

    Raises:
        ConfigError: neither given, ``extras`` with ``deploy``, or a bad path (one line naming the file and the fix).
        UnknownNameError: an unknown extra or ``accept`` name.
    """
    if model is None and deploy is None:
        raise ConfigError("give a model (an exported .onnx or a run folder), a wheelhouse (--deploy DIR), or both")
    if deploy is not None and extras:
        raise ConfigError(f"--extra reads this environment's install; with --deploy {deploy} every wheel in the "
                          "folder counts: drop --extra")
    items: list[LicenceItem] = []
    subject: dict[str, Any] = {"model": None if model is None else str(model), "kind": None,
                               "deploy": None if deploy is None else str(deploy), "extras": []}
    if model is not None:
        found, kind = model_items(model)
        items += found
        subject["kind"] = kind
    notes = []
    if deploy is not None:
        items += wheelhouse_items(deploy)
    else:
        deps, used = installed_items(extras)
        items += deps
        subject["extras"] = used
        if any(i.licence == NOT_INSTALLED for i in deps):
            notes.append("some runtime requirements are not installed in this environment; give the wheelhouse that "
                         "goes to the box (--deploy DIR) for their licences")
    return LicenceChain(items, subject, notes).accept(accept)


# ------------------------------------------------------------------------------------------ SBOM
def sbom_available() -> bool:
    """Whether cyclonedx-python-lib (the ``licences`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("cyclonedx") is not None and importlib.util.find_spec("packageurl") is not None


SBOM_MISSING = "the SBOM needs cyclonedx-python-lib: pip install 'edgevision[licences]' (the chain above is complete)"


def sbom_json(chain: LicenceChain, model: Path | str | None = None) -> str:
    """The chain as a CycloneDX 1.6 JSON SBOM: the runtime dependencies as ``library`` components (purl
    ``pkg:pypi/NAME@VERSION``, licence id, expression or name), the starting weights as a
    ``machine-learning-model`` component, the dataset as ``data``, the training code as a ``framework``; each
    with ``edgevision:role`` and ``edgevision:licence-category`` properties. The model file, when given, is the
    BOM's subject (``metadata.component``, with its sha256).

    Raises:
        ConfigError: cyclonedx-python-lib is not installed (`SBOM_MISSING`).
    """
    if not sbom_available():
        raise ConfigError(SBOM_MISSING)
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    try:
        from cyclonedx.contrib.license.factories import LicenseFactory
    except ImportError:  # cyclonedx-python-lib before the contrib package
        from cyclonedx.factory.license import LicenseFactory  # type: ignore[no-redef]

    from edgevision import __version__

    factory = LicenseFactory()
    bom = Bom()
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="edgevision",
                                                version=__version__))
    subject = None
    if model is not None:
        mp = Path(model)
        hashes = []
        if mp.is_file():
            from edgevision.core.io import sha256_file

            hashes = [HashType(alg=HashAlgorithm.SHA_256, content=sha256_file(mp))]
        subject = Component(type=ComponentType.MACHINE_LEARNING_MODEL, name=mp.name, bom_ref="model", hashes=hashes)
        bom.metadata.component = subject
    kinds = {"code": ComponentType.FRAMEWORK, "weights": ComponentType.MACHINE_LEARNING_MODEL,
             "dataset": ComponentType.DATA, "dependency": ComponentType.LIBRARY}
    parts = []
    for n, item in enumerate(chain.items):
        if item.licence == NOT_INSTALLED:
            continue  # not shipped from here: named in the chain, not a component
        props = [Property(name="edgevision:role", value=item.role),
                 Property(name="edgevision:licence-category", value=item.category)]
        if item.accepted:
            props.append(Property(name="edgevision:accepted", value="true"))
        licences = [] if item.licence.lower().startswith(("unknown", "none")) else [factory.make_from_string(item.licence)]
        if item.role == "dependency":
            comp = Component(type=ComponentType.LIBRARY, name=item.name, version=item.version,
                             purl=PackageURL(type="pypi", name=_canon(item.name), version=item.version),
                             bom_ref=f"pypi:{_canon(item.name)}@{item.version or ''}#{n}", licenses=licences,
                             properties=props)
        else:
            comp = Component(type=kinds[item.role], name=item.name, bom_ref=f"{item.role}:{n}", licenses=licences,
                             properties=props, description=item.note or None)
        bom.components.add(comp)
        parts.append(comp)
    if subject is not None:
        bom.register_dependency(subject, parts)
    return JsonV1Dot6(bom).output_as_string(indent=2)


def write_sbom(chain: LicenceChain, path: Path | str, model: Path | str | None = None) -> Path:
    """Write `sbom_json` to ``path`` atomically.

    Raises:
        ConfigError: cyclonedx-python-lib is missing, or the file cannot be written.
    """
    from edgevision.core.io import write_atomic

    text = sbom_json(chain, model)
    try:
        return write_atomic(path, text + "\n")
    except OSError as e:
        raise ConfigError(f"--sbom {path}: cannot write ({e.strerror})") from e
