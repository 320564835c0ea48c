"""manifest.py
===========
A batch manifest: which inputs to fit, with which ``fit`` options, into which run folders.

TOML (the full form)::

    inputs = ["scans/*.nii.gz", "sections/hand.csl"]   # paths and globs, relative to the manifest
    time_budget = 40                                   # fit options at the top level: defaults for every item
    every = 8
    [train]                                            # config tables (as in a run's config.toml) are defaults too
    batch_size = 4096

    [[items]]                                          # options for the inputs an entry matches (a path or glob);
    input = "scans/case07.nii.gz"                      # inputs not listed above are added
    every = 4

    [[items]]                                          # with a name: an item of its own, e.g. a second fit of
    input = "sections/hand.csl"                        # the same input with other options
    name = "hand_mlp"
    field = "mlp"

CSV (a plain list): a header row with ``input`` and any fit options (``name``, ``time_budget``, ``every``, ...,
dotted config keys such as ``train.lr``); empty cells keep the default. A file of paths only, one per line and no
header, works too.

Everything that can be checked without fitting is checked before anything runs, and every problem is reported (one
line each): unknown keys (with the nearest known one), values of the wrong type, missing files, globs that match
nothing, two items with one folder name.
"""

from __future__ import annotations

import csv
import difflib
import glob
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldstudio.config import dotted_keys
from fieldstudio.errors import FieldStudioError
from fieldstudio.tasks.spec import suffix_of

# fit options a manifest may set, with their types (the CLI's `fit` options; paths are relative to the manifest)
OPTIONS: dict[str, type] = {"task": str, "field": str, "params": int, "steps": int, "time_budget": float,
                            "resolution": int, "seed": int, "labels": str, "every": int, "offset": int,
                            "planes": str, "roi": str, "reference": Path, "downscale": int, "config": Path}
# config tables (a run's config.toml sections) that a manifest may set as defaults or per item
SECTIONS = ("mesh", "field", "train", "sdf", "slices", "image", "nerf")
ITEM_KEYS = ("input", "name")


class ManifestError(FieldStudioError):
    """A manifest that cannot run; ``problems`` holds one line per problem."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = [f"{path.name}: {p}" for p in problems]
        super().__init__("; ".join(self.problems))


@dataclass
class Item:
    """One fit of a batch: ``name`` is its run folder under the batch's output folder."""

    name: str
    input: Path
    options: dict[str, Any] = field(default_factory=dict)     # fit options (Request fields)
    overrides: dict[str, Any] = field(default_factory=dict)   # dotted config keys: {"train.lr": 1e-3}

    def request(self):
        from fieldstudio.api import Request

        return Request(self.input, **self.options, overrides=dict(self.overrides))


@dataclass
class Manifest:
    path: Path
    items: list[Item]


def load_manifest(path: str | Path) -> Manifest:
    """Read and check ``path`` (.toml, or .csv / .txt for a list). Raises ManifestError listing every problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FieldStudioError(f"manifest not found: {path}")
    problems: list[str] = []
    if path.suffix.lower() == ".toml":
        entries = _toml_entries(path, problems)
    elif path.suffix.lower() in (".csv", ".txt", ".lst", ""):
        entries = _csv_entries(path, problems)
    else:
        raise FieldStudioError(f"{path.name}: a manifest is a .toml file (or a .csv list of inputs)")
    items = _expand(path.parent.resolve(), entries, problems)
    if not items and not problems:
        problems.append("no inputs: list them in inputs = [...] or in [[items]] tables")
    _check_names(items, problems)
    if problems:
        raise ManifestError(path, problems)
    return Manifest(path.resolve(), items)


# ------------------------------------------------------------------------------------------------ reading

@dataclass
class _Entry:
    """A path or glob with its options, as written. ``own``: an item of its own (named), never merged."""

    pattern: str
    where: str                 # for messages: "inputs[2]", "items[1]", "line 4"
    options: dict[str, Any]
    overrides: dict[str, Any]
    name: str | None = None
    merge: bool = False        # [[items]] without a name: options for the inputs it matches


def _toml_entries(path: Path, problems: list[str]) -> list[_Entry]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FieldStudioError(f"{path.name} is not valid TOML: {err}") from None
    inputs = data.pop("inputs", [])
    if isinstance(inputs, str):
        inputs = [inputs]
    items = data.pop("items", [])
    defaults, default_overrides = _options(data, "top level", problems, allowed=())
    entries = []
    if not isinstance(inputs, list) or not all(isinstance(p, str) for p in inputs):
        problems.append('inputs must be a list of paths or globs, e.g. inputs = ["scans/*.nii.gz"]')
        inputs = []
    for i, pattern in enumerate(inputs):
        entries.append(_Entry(pattern, f"inputs[{i}]", dict(defaults), dict(default_overrides)))
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        problems.append("items must be [[items]] tables")
        items = []
    for i, table in enumerate(items):
        where = f"[[items]] #{i + 1}"
        options, overrides = _options(table, where, problems, allowed=ITEM_KEYS)
        if not isinstance(table.get("input"), str):
            problems.append(f"{where} needs input = \"PATH\" (a path or glob)")
            continue
        name = table.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            problems.append(f"{where}: name must be a non-empty string")
            name = None
        entries.append(_Entry(table["input"], where, {**defaults, **options},
                              {**default_overrides, **overrides}, name=name, merge=name is None))
    return entries


def _options(table: dict, where: str, problems: list[str], allowed: tuple[str, ...]) -> tuple[dict, dict]:
    """The fit options and config overrides of one table; unknown keys and wrong types become problems."""
    options, overrides = {}, {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key in allowed:
            continue
        if key in SECTIONS and isinstance(value, dict):
            for name, v in dotted_keys(value, key):
                overrides[name] = v
        elif "." in key and key.split(".")[0] in SECTIONS:
            overrides[key] = value
        elif key in OPTIONS:
            converted = _typed(key, value)
            if converted is None:
                problems.append(f"{where}: {raw_key} = {value!r} is not {_type_name(OPTIONS[key])}")
            else:
                options[key] = converted
        else:
            known = list(OPTIONS) + list(SECTIONS) + list(allowed) + (["inputs", "items"] if where == "top level"
                                                                      else [])
            near = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"{where}: unknown key {raw_key!r}{hint}; fit options are {', '.join(OPTIONS)}, and "
                            f"config tables [{'], ['.join(SECTIONS)}]")
    return options, overrides


def _typed(key: str, value: Any) -> Any:
    """``value`` as the option's type, or None when it cannot be one (lists of labels / ROIs are joined)."""
    kind = OPTIONS[key]
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind is Path:
        return value if isinstance(value, str) and value else None
    if isinstance(value, list) and key in ("labels", "roi"):
        return ",".join(str(v) for v in value)
    if key == "labels" and isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _type_name(kind: type) -> str:
    return {int: "a whole number", float: "a number", Path: "a path", str: "a string"}[kind]


def _csv_entries(path: Path, problems: list[str]) -> list[_Entry]:
    text = path.read_text(encoding="utf-8-sig")
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)
            and not r[0].lstrip().startswith("#")]
    if not rows:
        return []
    header = [c.strip().replace("-", "_") for c in rows[0]]
    if "input" not in header:
        if any(len(r) > 1 for r in rows):
            problems.append("a CSV with several columns needs a header row naming them (input, name, time_budget, "
                            "every, ...)")
            return []
        return [_Entry(r[0].strip(), f"line {i + 1}", {}, {}) for i, r in enumerate(rows)]
    entries = []
    for i, row in enumerate(rows[1:], start=2):
        cells = {k: c.strip() for k, c in zip(header, row) if c.strip()}
        if len(row) > len(header):
            problems.append(f"line {i}: {len(row)} cells under a header of {len(header)}")
        table = {k: _cell_value(k, v) for k, v in cells.items()}
        where = f"line {i}"
        options, overrides = _options(table, where, problems, allowed=ITEM_KEYS)
        if "input" not in cells:
            problems.append(f"{where}: no input")
            continue
        entries.append(_Entry(cells["input"], where, options, overrides, name=cells.get("name")))
    return entries


def _cell_value(key: str, text: str) -> Any:
    """A CSV cell as the type its column wants (numbers for numeric options and config keys)."""
    kind = OPTIONS.get(key)
    if kind in (str, Path) or key in ITEM_KEYS:
        return text
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


# ------------------------------------------------------------------------------------------------ items

def _matches(base: Path, pattern: str) -> list[Path]:
    full = Path(pattern).expanduser()
    full = full if full.is_absolute() else base / full
    if glob.has_magic(str(full)):
        return sorted(Path(p).resolve() for p in glob.glob(str(full), recursive=True))
    return [full.resolve()] if full.exists() else []


def _expand(base: Path, entries: list[_Entry], problems: list[str]) -> list[Item]:
    """Entries -> items in manifest order: globs expanded, merge entries applied to the inputs they match."""
    items: list[Item] = []
    by_input: dict[Path, Item] = {}
    for e in entries:
        paths = _matches(base, e.pattern)
        if not paths:
            what = "matches nothing" if glob.has_magic(e.pattern) else "not found"
            problems.append(f"{e.where}: {e.pattern} {what} (paths are relative to the manifest's folder, {base})")
            continue
        options = {k: _relative_path(base, v) if OPTIONS.get(k) is Path else v for k, v in e.options.items()}
        if e.name is not None:
            if len(paths) > 1:
                problems.append(f"{e.where}: name = {e.name!r} is for one input, but {e.pattern} matches "
                                f"{len(paths)}")
                continue
            items.append(Item(_safe_name(e.name), paths[0], options, dict(e.overrides)))
            continue
        for p in paths:
            if p in by_input:
                if e.merge:  # an [[items]] entry's options for an input listed already
                    by_input[p].options.update({k: v for k, v in options.items() if k in e.options})
                    by_input[p].overrides.update(e.overrides)
                continue  # listed twice by globs: fitted once
            by_input[p] = Item("", p, dict(options), dict(e.overrides))
            items.append(by_input[p])
    _name_items([it for it in items if not it.name])
    return items


def _relative_path(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def stem(path: Path) -> str:
    """An input's name without its suffix (``case01.nii.gz`` -> ``case01``; folders keep their name)."""
    if path.is_dir():
        return path.name
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.stem


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "item"


def _name_items(items: list[Item]) -> None:
    """Folder names from the inputs: the stem, and as many parent folders as it takes to tell equal stems apart
    (``a/heart.nii.gz``, ``b/heart.nii.gz`` -> ``a_heart``, ``b_heart``). Stable while the manifest is."""
    depth = {id(it): 0 for it in items}

    def name(it: Item) -> str:
        parents = it.input.parent.parts[len(it.input.parent.parts) - depth[id(it)]:] if depth[id(it)] else ()
        return _safe_name("_".join([*parents, stem(it.input)]))

    for _ in range(64):
        groups: dict[str, list[Item]] = {}
        for it in items:
            groups.setdefault(name(it), []).append(it)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        for group in clashes:
            for it in group:
                depth[id(it)] = min(depth[id(it)] + 1, len(it.input.parent.parts))
    for it in items:
        it.name = name(it)


def _check_names(items: list[Item], problems: list[str]) -> None:
    seen: dict[str, Item] = {}
    for it in items:
        key = it.name.lower()  # one folder on case-insensitive file systems
        if key in seen:
            problems.append(f"two items would share the run folder {it.name!r} ({seen[key].input} and {it.input}); "
                            "give one of them another name = \"...\"")
        else:
            seen[key] = it
    for it in items:
        if it.name.lower() in ("report.json", "report.html"):
            problems.append(f"the name {it.name!r} is the batch report's; choose another")
