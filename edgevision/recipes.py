"""Public-dataset recipes: how to read a published defect dataset exactly as it is downloaded.

A recipe is a small YAML file in the top-level ``converters/`` folder (packaged as
``edgevision/_recipes`` in a wheel). It names the reader and its options, maps the dataset's own
class names onto a canonical list, and records the licence, the citation and the known quirks of
the published files. ``convert --recipe neu-det`` reads through it:

>>> from edgevision.recipes import get_recipe, list_recipes
>>> "neu-det" in list_recipes()
True
>>> rec = get_recipe("neu-det")
>>> rec.reader, rec.research_only
('voc', True)

The reader does the format work; `Recipe.apply` then renames, merges, drops and reorders classes,
assigns splits and stamps the licence into ``dataset.meta``.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgevision.config import load_yaml_config
from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, EdgeVisionError, UnknownNameError
from edgevision.core.report import Report
from edgevision.data.remap import DROPPED, UNMAPPED, carried_label_fields, class_lut, relabel

log = logging.getLogger(__name__)

__all__ = ["Recipe", "get_recipe", "list_recipes", "load_recipe", "recipe_dirs"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SUFFIXES = (".yaml", ".yml")


class SplitRule(BaseModel):
    """Assigns a split to the images whose name matches a glob.

    Attributes:
        match: an ``fnmatch`` pattern on the image file's POSIX path relative to the folder read
            (``*`` crosses ``/``), e.g. ``"Validation_Images/*"``.
        split: the split those images get (``train``, ``val``, ``test`` or another name).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(min_length=1)
    split: str = Field(min_length=1)


class Recipe(BaseModel):
    """One public dataset: which reader reads it, its classes, licence and quirks.

    Attributes:
        name: the recipe's name (the YAML file's stem), lower-case with dashes, e.g. ``neu-det``.
        title: the dataset's published name.
        reader: a readable format name (``voc``, ``coco``, ``masks``, ``rle-csv``, ...).
        options: that reader's ``ReadOptions``, checked when the recipe is loaded.
        classes: the canonical class order; None keeps the order the reader found (after
            ``class_map``). When given, every object's class must map into it (``class_unknown``).
        class_map: source class name -> canonical name (renames and merges), or None (YAML ``null``)
            to drop that class's objects with a counted warning. Unlisted names pass unchanged.
        splits: rules giving images a split by the image file's path relative to the folder read
            (the record name when there is no file); the first match wins, images no rule matches
            keep the split the reader gave them.
        licence: SPDX id (``CC-BY-NC-SA-4.0``) or a short name when there is none (``unspecified``).
        licence_note: the terms in a sentence or two, where the licence is not a plain SPDX id.
        commercial_use: True only when the licence grants commercial use.
        research_only: True when the publisher restricts use to research / academic work.
        citation: what to cite when publishing results on the dataset.
        homepage: where the dataset is described and downloaded.
        layout: the folder layout as published, and which folder to pass to ``convert``.
        quirks: real, known quirks of the published files and how EdgeVision handles each.
        published: counts as published or measured on the full download (``images``,
            ``objects``, ...), for a quick sanity check; informational.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str = Field(min_length=1)
    reader: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    classes: list[str] | None = None
    class_map: dict[str, str | None] = Field(default_factory=dict)
    splits: list[SplitRule] = Field(default_factory=list)
    licence: str = Field(min_length=1, max_length=40)
    licence_note: str | None = None
    commercial_use: bool
    research_only: bool
    citation: str = Field(min_length=1)
    homepage: str = Field(min_length=1)
    layout: str = Field(min_length=1)
    quirks: list[str] = Field(default_factory=list)
    published: dict[str, int] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"expected lower-case letters, digits and dashes (e.g. 'neu-det'), got '{v}'")
        return v

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("expected at least one class, or leave 'classes' out")
        dup = sorted(n for n, c in Counter(v).items() if c > 1)
        if dup:
            raise ValueError(f"class names must be unique, got duplicates {dup}")
        return v

    @model_validator(mode="after")
    def _check_consistency(self) -> Recipe:
        if self.research_only and self.commercial_use:
            raise ValueError("research_only and commercial_use cannot both be true")
        if self.classes is not None:
            missing = sorted({t for t in self.class_map.values() if t is not None} - set(self.classes))
            if missing:
                raise ValueError(f"class_map maps to {missing}, which are not in 'classes' {self.classes}")
        return self

    # -- loading-time checks ----------------------------------------------------------------
    def check_reader(self) -> None:
        """Check that ``reader`` is a readable format and ``options`` fit its ``ReadOptions``.

        Raises:
            UnknownNameError: for an unknown reader; ConfigError: for bad options.
        """
        from edgevision.formats import get_format

        fmt = get_format(self.reader)
        if not fmt.can_read:
            raise ConfigError(f"recipe '{self.name}': format '{fmt.name}' cannot be read")
        fmt.parse_options(self.options)

    # -- user-facing facts --------------------------------------------------------------------
    def licence_warning(self) -> str | None:
        """A one-line warning for research-only or not commercially licensed datasets, else None."""
        if self.research_only:
            use = "is for research use only"
        elif not self.commercial_use:
            use = "is not licensed for commercial use"
        else:
            return None
        return (f"{self.title} {use} ({self.licence}); do not ship models trained on it in a "
                f"commercial product without the publisher's permission. See {self.url}")

    @property
    def url(self) -> str:
        """The dataset's main web address (the first word of ``homepage``)."""
        return self.homepage.split()[0]

    def licence_meta(self) -> dict[str, Any]:
        """What `apply` records in ``dataset.meta`` about the source and its terms."""
        return {
            "recipe": self.name,
            "licence": self.licence,
            "licence_note": self.licence_note,
            "commercial_use": self.commercial_use,
            "research_only": self.research_only,
            "citation": self.citation,
            "homepage": self.homepage,
        }

    def _coco_meta(self) -> dict[str, Any]:
        """COCO-style ``info`` / ``licenses`` so written COCO files carry the source and its terms."""
        return {
            "info": {"description": f"{self.title} (read with EdgeVision recipe '{self.name}')", "url": self.url},
            "licenses": [{"id": 1, "name": self.licence, "url": self.url}],
        }

    # -- applying -----------------------------------------------------------------------------
    def apply(self, dataset: Dataset, report: Report) -> Dataset:
        """Map the reader's classes onto the recipe's, assign splits and record the licence.

        Objects of a class mapped to None are dropped (one ``class_dropped`` warning per class,
        with the count). With ``classes`` given, an object whose class is not covered is a
        ``class_unknown`` error on its image: ``fail`` raises, ``skip`` drops the image, ``keep``
        appends the class after the canonical ones so a validator can still show it.

        Args:
            dataset: what the reader produced.
            report: the read's report (same error policy).

        Returns:
            A new `Dataset`; the input is not modified.
        """
        src = dataset.labels.names
        names, lut = self._target_table(src)
        dropped: Counter[str] = Counter()
        images: list[ImageRecord] = []
        for rec in dataset.images:
            guard = report.guard(rec.name)
            with guard:
                new = self._remap(rec, src, names, lut, report, dropped, dataset.root)
            if guard.ok:
                images.append(new)
        for cls, n in sorted(dropped.items()):
            report.warning("class_dropped", f"recipe {self.name}",
                           f"dropped {n} object(s) of class '{cls}' (class_map maps it to null)")
        out = Dataset(
            labels=LabelMap(names, *self._carried_label_fields(dataset.labels, names)),
            images=images,
            root=dataset.root,
            meta={**self._coco_meta(), **dataset.meta, **self.licence_meta()},
        )
        warning = self.licence_warning()
        if warning:
            log.info("%s", warning)
        return out

    def target_of(self, source_name: str) -> str | None:
        """The canonical name of a source class (itself when unmapped), or None when it is dropped."""
        return self.class_map.get(source_name, source_name)

    def _target_table(self, src: list[str]) -> tuple[list[str], np.ndarray]:
        """Canonical names and a lookup table source id -> canonical id (or UNMAPPED/DROPPED)."""
        return class_lut([self.target_of(n) for n in src], self.classes)

    def _remap(self, rec: ImageRecord, src: list[str], names: list[str], lut: np.ndarray,
               report: Report, dropped: Counter[str], root: Path | None) -> ImageRecord:
        """One image's objects under the lookup table; ``names`` grows under ``keep`` only."""
        new_ids = lut[rec.class_ids] if len(rec) else np.zeros(0, dtype=np.int64)
        for j in np.flatnonzero(new_ids == UNMAPPED):
            cls = src[rec.class_ids[j]]
            self._unknown_class(rec, int(j), cls, names, report)
            if cls not in names:  # reached under ``keep`` only: show the class as read
                names.append(cls)
            new_ids[j] = names.index(cls)
        dropped.update(src[c] for c in rec.class_ids[new_ids == DROPPED])
        out = relabel(rec, new_ids)
        split = self.split_of(_split_key(rec, root))
        if split is not None:
            out.split = split
        return out

    def _unknown_class(self, rec: ImageRecord, j: int, cls: str, names: list[str], report: Report) -> None:
        known = sorted(set(names) | set(self.class_map))
        close = difflib.get_close_matches(cls, known, n=1)
        hint = f" (closest known: '{close[0]}')" if close else ""
        report.error(
            "class_unknown", f"{rec.name}:object[{j}]",
            f"class '{cls}' is not covered by recipe '{self.name}'{hint}; expected one of "
            f"{', '.join(names)}; add '{cls}' to the recipe's class_map (null drops it)",
        )

    def split_of(self, image_path: str) -> str | None:
        """The split the first matching rule gives ``image_path``, or None when none matches.

        Args:
            image_path: the image file's POSIX path relative to the dataset root (see `splits`).
        """
        for rule in self.splits:
            if fnmatch.fnmatchcase(image_path, rule.match):
                return rule.split
        return None

    def _carried_label_fields(
        self, src: LabelMap, names: list[str]
    ) -> tuple[list[int] | None, list[dict[str, Any]] | None]:
        """Keep source ids / extras when each canonical class comes from exactly one source class."""
        return carried_label_fields(src, [self.target_of(n) for n in src.names], names)


def _split_key(rec: ImageRecord, root: Path | None) -> str:
    """What split rules match: the image file's path relative to the dataset root, else its name."""
    if rec.path is not None and root is not None:
        try:
            return Path(rec.path).relative_to(root).as_posix()
        except ValueError:
            pass
    return rec.name


# -- the recipe files ---------------------------------------------------------------------------
def recipe_dirs() -> list[Path]:
    """Where recipes are looked for, in order: the repository's ``converters/``, then the package's."""
    import edgevision

    pkg = Path(edgevision.__file__).resolve().parent
    return [d for d in (pkg.parent / "converters", pkg / "_recipes") if d.is_dir()]


def _recipe_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for p in sorted(d.iterdir()):
            if p.suffix in _SUFFIXES and p.is_file():
                found.setdefault(p.stem, p)
    return found


def list_recipes() -> list[str]:
    """Names of the recipes shipped with EdgeVision, sorted."""
    return sorted(_recipe_files())


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (or, for a name ending in ``.yaml``, the recipe file there), checked.

    Raises:
        UnknownNameError: listing the recipes and the closest name.
        ConfigError: when the recipe file is invalid.
    """
    if Path(name).suffix in _SUFFIXES:
        return load_recipe(Path(name))
    files = _recipe_files()
    key = name.strip().lower().replace("_", "-")
    if key not in files:
        raise UnknownNameError("recipe", name, files)
    return load_recipe(files[key])


def load_recipe(path: Path | str) -> Recipe:
    """Load and check one recipe file: its fields, its name, its reader and the reader's options.

    Raises:
        ConfigError: a one-line message naming the file and the field.
    """
    path = Path(path)
    rec = load_yaml_config(path, Recipe, "recipe")
    if rec.name != path.stem:
        raise ConfigError(f"{path}: recipe name '{rec.name}' must match the file name '{path.stem}'")
    try:
        rec.check_reader()
    except EdgeVisionError as e:
        raise ConfigError(f"{path}: {e}") from e
    return rec
