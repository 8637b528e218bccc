"""Loading experiments: safe YAML, ``extends:`` inheritance and typed ``--set`` overrides.

- Files are read by :mod:`flowkit.yamlio`: a safe loader (no Python objects) that
  reads YAML 1.2 floats such as ``1e-3`` as numbers, refuses duplicate keys, and bounds size,
  depth and alias expansion.
- ``extends: base.yaml`` (or a list of files) loads the bases first and deep-merges this file on
  top: mappings merge key by key, anything else (lists included) is replaced. Relative paths are
  resolved against the including file; a bare name without ``.yaml`` (``extends: default``) names
  a built-in experiment shipped in ``flowkit/experiment/``.
- Data files named in a file (``tensor_file``'s ``path``, ``image_folder``'s ``path``) are
  relative to that file (:func:`resolve_data_paths`); in ``--set`` and mappings, to the
  working directory.
- ``--set key.path=value`` sets one value; the key path uses dots and list indices
  (``stages[1].training.steps=100`` or ``stages.1.training.steps=100``), the value is parsed as YAML
  (``lr=3e-4`` is a float, ``steps=[1,2]`` a list, ``ema=null`` None). Setting an option of a
  component given by name turns it into a mapping (``model.hidden=64`` on ``model: mlp``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowkit.checks import shown
from flowkit.errors import ConfigError
from flowkit.registry import DISTRIBUTIONS
from flowkit.yamlio import parse_yaml, read_text

BUILTIN_DIR = Path(__file__).parent
DEFAULT_EXPERIMENT = "default"
_KEY_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def builtin_path(name: str) -> Path:
    """Path of the built-in experiment ``name`` (``default``: the moons reflow pipeline)."""
    path = BUILTIN_DIR / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
        raise ConfigError(
            [("extends", f"no built-in experiment {name!r}; built-in: {', '.join(choices)}")]
        )
    return path


def read_file(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one experiment file and everything it ``extends``, merged."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError([("extends", f"circular extends: {cycle}")], str(path))
    data = parse_yaml(read_text(path), str(path))
    if data is None:
        raise ConfigError(
            [("", "empty experiment: the file holds no keys (write at least `extends: default`)")],
            str(path),
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [("", f"must be a mapping at the top level, got {shown(data)}")], str(path)
        )
    return with_bases(resolve_data_paths(data, path.parent), path.parent, (*chain, path))


def with_bases(
    data: dict[str, Any], directory: Path, chain: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """``data`` merged over the files its ``extends`` names (relative to ``directory``)."""
    bases = data.pop("extends", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError([("extends", f"must be a file name or a list of them, got {bases!r}")])
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, read_file(resolve_base(base, directory), chain))
    return deep_merge(merged, data)


def resolve_data_paths(node: Any, directory: Path) -> Any:
    """``node`` with the file paths of data specs made absolute against ``directory`` (the
    YAML file's), so that ``{name: tensor_file, path: x.npy}`` reads the ``x.npy`` beside it.

    A mapping naming a registered distribution whose factory has a ``resolve_paths(options,
    directory)`` attribute (``tensor_file``, ``image_folder``) is passed through it; the rest
    is left as it is.
    """
    if isinstance(node, list):
        return [resolve_data_paths(value, directory) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: resolve_data_paths(value, directory) for key, value in node.items()}
    name = node.get("name")
    if isinstance(name, str) and name in DISTRIBUTIONS:
        resolve = getattr(DISTRIBUTIONS.get(name).factory, "resolve_paths", None)
        if callable(resolve):
            return resolve(node, directory)
    return node


def resolve_base(name: str, directory: Path) -> Path:
    """A base named in ``extends``: a file relative to ``directory`` or a built-in name."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(directory, name).expanduser()
    return builtin_path(name)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings recursively, other values replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_key(key: str) -> list[str | int]:
    """``"stages[1].training.steps"`` -> ``["stages", 1, "training", "steps"]``."""
    parts: list[str | int] = []
    for segment in key.split("."):
        matches = list(_KEY_PART.finditer(segment))
        if not segment or "".join(m.group(0) for m in matches) != segment:
            raise ValueError(f"bad key path {key!r}: write e.g. training.lr or stages[1].steps")
        for m in matches:
            name, index = m.groups()
            parts.append(int(index) if index is not None else int(name) if name.isdigit() else name)
    return parts


def set_path(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[key path] = value`` in place, creating missing mappings."""
    parts = parse_key(key)
    node: Any = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(map(str, parts[:depth])) or "the top level"
        if isinstance(node, list):
            if not isinstance(part, int) or not -len(node) <= part < len(node):
                raise ValueError(f"{key}: {where} is a list of {len(node)}; no index {part!r}")
        elif isinstance(node, dict):
            part = str(part)
            child = node.get(part)
            if not last and isinstance(child, str):
                node[part] = {"name": child}
            elif not last and not isinstance(child, dict | list):
                node[part] = {}
        else:
            raise ValueError(f"{key}: {where} holds {node!r}, which has no key {part!r}")
        if last:
            node[part] = value
        else:
            node = node[part]


def apply_overrides(config: dict[str, Any], overrides: Iterable[str] | Mapping[str, Any]) -> None:
    """Apply ``key.path=value`` strings (values parsed as YAML) or a ``{key path: value}`` map."""
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            key, sep, raw = str(text).partition("=")
            if not sep or not key.strip():
                raise ConfigError([("--set", f"expected key.path=value, got {text!r}")])
            items.append((key.strip(), parse_yaml(raw, f"--set {key.strip()}")))
    problems: list[tuple[str, str]] = []
    for key, value in items:
        try:
            set_path(config, key, value)
        except ValueError as err:
            problems.append(("--set", str(err)))
    if problems:
        raise ConfigError(problems)


def load_config(
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> dict[str, Any]:
    """The raw (unvalidated) experiment: a file, a mapping or, with None, the built-in default.

    A mapping may itself hold ``extends`` (resolved against the working directory).
    """
    if source is None:
        config = read_file(builtin_path(DEFAULT_EXPERIMENT))
    elif isinstance(source, Mapping):
        config = with_bases(copy.deepcopy(dict(source)), Path.cwd())
    else:
        config = read_file(Path(source))
    apply_overrides(config, overrides)
    return config
