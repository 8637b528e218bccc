"""Reading experiment YAML safely: bounded in size, depth and alias expansion, strict about keys.

- Files must be regular files of at most :data:`MAX_BYTES`, in UTF-8 (``/dev/zero``, a FIFO or
  a binary file is refused with the file's name, never echoed).
- The loader is a :class:`yaml.SafeLoader` (no Python objects) that also reads YAML 1.2 floats
  (``1e-3``), refuses duplicate keys (with their line), nesting deeper than :data:`MAX_DEPTH`
  and documents that expand to more than :data:`MAX_NODES` nodes through aliases ("billion
  laughs"), so a malformed file is a :class:`ConfigError`, not a ``MemoryError`` or
  ``RecursionError``.
- :func:`sealed_yaml` writes a mapping with a first-line comment holding the sha256 of the rest;
  :func:`read_sealed_yaml` reads it back and refuses a damaged copy (a run's ``config.yaml``).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from flowkit.errors import ConfigError, DamagedRunError
from flowkit.integrity import sha256_bytes

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
SEAL_COMMENT = "# flowkit run config, sha256 of the lines below: "
SEAL = re.compile(rf"\A{re.escape(SEAL_COMMENT)}([0-9a-f]{{64}})\n")


class SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats, duplicate-key and depth checks."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"nesting deeper than {MAX_DEPTH} levels (line {mark.line + 1})"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: SafeLoader reports it with its own message
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.YAMLError(f"duplicate key {str(key)[:80]!r} (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes of the document once its aliases are expanded (shared nodes counted each time)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a recursive alias counts as one node (SafeLoader then refuses it)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        memo[key] = min(MAX_NODES + 1, 1 + sum(expanded_size(c, memo) for c in children))
    return memo[key]


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text safely; any problem becomes a :class:`ConfigError` naming ``source``."""
    loader = SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node, {}) > MAX_NODES:
            raise yaml.YAMLError(f"more than {MAX_NODES} values once its aliases are expanded")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError([("", f"YAML error: {str(err)[:500]}")], source) from None
    except RecursionError:
        raise ConfigError([("", "YAML error: nested too deeply")], source) from None
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """The UTF-8 text of the experiment file ``path`` (a regular file of at most MAX_BYTES)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                [("", "is not a regular file (a device, FIFO or directory)")], str(path)
            )
        if info.st_size > MAX_BYTES:
            raise ConfigError(
                [("", f"is {info.st_size} bytes; experiment files are limited to {MAX_BYTES}")],
                str(path),
            )
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(
            [("", f"cannot read experiment file: {err.strerror}")], str(path)
        ) from None
    if len(data) > MAX_BYTES:
        raise ConfigError([("", f"is larger than {MAX_BYTES} bytes")], str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            [("", f"is not UTF-8 text (byte {err.start}); experiment files are UTF-8 YAML")],
            str(path),
        ) from None


def sealed_yaml(data: Mapping[str, Any]) -> str:
    """YAML text of ``data`` after a first-line comment holding the sha256 of the rest."""
    body = yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)
    return f"{SEAL_COMMENT}{sha256_bytes(body.encode())}\n{body}"


def read_sealed_yaml(path: Path, what: str) -> dict[str, Any]:
    """The mapping in file ``path`` written by :func:`sealed_yaml`, checked against its sha256
    (a file without the comment, edited on purpose, is read as it is).

    Raises:
        DamagedRunError: naming ``path`` and ``what`` it holds, when the file is missing,
            unreadable, not a mapping or differs from its sha256.
    """
    hint = (
        "restore it from a backup; if you edited it on purpose, delete its first line "
        "(the sha256 comment)"
    )
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedRunError(path, what, hint, f"unreadable: {err}") from None
    match = SEAL.match(text)
    if match and sha256_bytes(text[match.end() :].encode("utf-8")) != match.group(1):
        raise DamagedRunError(path, what, hint, "its sha256 differs")
    try:
        data = parse_yaml(text, str(path))
    except ConfigError as err:
        raise DamagedRunError(path, what, hint, err.problems[0][1]) from None
    if not isinstance(data, dict):
        raise DamagedRunError(path, what, hint, "not a mapping")
    return data
