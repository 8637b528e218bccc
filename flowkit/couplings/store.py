"""On-disk pair store: safetensors shards plus a manifest written last.

Layout of a store directory::

    shard-00000.safetensors   pairs [0, S)          tensors x0, x1, cond.<key>, states
    shard-00001.safetensors   pairs [S, 2S)         (states: teacher states on a time grid)
    ...
    manifest.json             written once every shard exists

Shard ``i`` is produced from its own generator seeded by ``shard_seed(seed, i)``, so shards can
be computed in any order, by any process (e.g. one rank per shard subset), and recomputed alone.
Each file is written through :func:`flowkit.atomic.atomic_write` (a temporary name, fsync, then
``os.replace``): only complete files with the final name count, and a half-written shard is never
read. Every shard carries the
store's *fingerprint* (teacher hash, solver, options, seed, counts) in its safetensors metadata,
so resuming with another teacher or solver raises instead of mixing pairs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flowkit.atomic import atomic_write, atomic_write_text
from flowkit.seeds import derive_seed

MANIFEST = "manifest.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5})\.safetensors$")


class StoreMismatchError(ValueError):
    """A pair store on disk was made with another teacher, solver or options."""


def teacher_hash(field: Any) -> str:
    """sha256 of a teacher: its ``state_dict`` bytes (name, dtype, shape, data, sorted by name).

    A field that is not an ``nn.Module`` (e.g. an analytic velocity) is identified by its type's
    (or function's) qualified name only.
    """
    h = hashlib.sha256()
    if isinstance(field, nn.Module):
        for name, value in sorted(field.state_dict().items()):
            value = value.detach().cpu().contiguous()
            h.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
            h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        owner = field if callable(field) and hasattr(field, "__qualname__") else type(field)
        h.update(f"{owner.__module__}.{owner.__qualname__}".encode())
    return h.hexdigest()


def shard_seed(seed: int, index: int) -> int:
    """Seed of shard ``index``: :func:`flowkit.seeds.derive_seed` ``(seed, index)``."""
    return derive_seed(seed, index)


def shard_sizes(num_pairs: int, shard_size: int) -> list[int]:
    """Sizes of the shards holding ``num_pairs`` pairs, ``shard_size`` each (last one smaller)."""
    full, rest = divmod(num_pairs, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def canonical(obj: Mapping[str, Any]) -> str:
    """Stable JSON text of a fingerprint (sorted keys; non-JSON values by repr)."""
    return json.dumps(obj, sort_keys=True, default=repr)


class PairStore:
    """A directory of pair shards and their manifest.

    Args:
        directory: the store directory (created on first write).

    Example:
        >>> store = PairStore("runs/pairs")  # doctest: +SKIP
        >>> tensors = store.load()           # after fk.reflow(..., store="runs/pairs")
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"PairStore({str(self.directory)!r})"

    def shard_path(self, index: int) -> Path:
        return self.directory / f"shard-{index:05d}.safetensors"

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None while the store is incomplete."""
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text())

    def check(self, fingerprint: Mapping[str, Any], found: Mapping[str, Any], where: str) -> None:
        """Raise :class:`StoreMismatchError` naming the fields that differ."""
        want, have = json.loads(canonical(fingerprint)), json.loads(canonical(found))
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            details = "; ".join(
                f"{k}: stored {have.get(k)!r}, requested {want.get(k)!r}" for k in diff
            )
            raise StoreMismatchError(
                f"pair store {str(self.directory)!r} ({where}) was made with different settings "
                f"({details}). Use another store directory or delete this one; pairs from "
                "different teachers or solvers are never mixed."
            )

    def completed(self, fingerprint: Mapping[str, Any]) -> set[int]:
        """Indices of complete shards; raises if one was made with another fingerprint."""
        if not self.directory.exists():
            return set()
        done = set()
        for path in sorted(self.directory.iterdir()):
            match = SHARD_PATTERN.match(path.name)
            if match is None:
                continue
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
            self.check(fingerprint, json.loads(meta.get("fingerprint", "{}")), path.name)
            done.add(int(match.group(1)))
        return done

    def write_shard(
        self, index: int, tensors: Mapping[str, Tensor], fingerprint: Mapping[str, Any], nfe: int
    ) -> Path:
        """Atomically write shard ``index`` (tensors moved to CPU and made contiguous)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"fingerprint": canonical(fingerprint), "index": str(index), "nfe": str(nfe)}
        path = self.shard_path(index)
        atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=meta))
        return path

    def shard_nfe(self, index: int) -> int:
        """Function evaluations the teacher spent on shard ``index``."""
        with safe_open(self.shard_path(index), "pt") as f:
            return int((f.metadata() or {}).get("nfe", 0))

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Atomically write ``manifest.json`` and remove stale temporary files."""
        text = json.dumps(manifest, indent=2, sort_keys=True, default=repr)
        atomic_write_text(self.manifest_path, text)
        for path in self.directory.glob(".shard-*.tmp-*"):
            path.unlink(missing_ok=True)

    def load_shards(self, indices: list[int]) -> dict[str, Tensor]:
        """Concatenate the tensors of the given shards along the batch axis."""
        parts = [load_file(str(self.shard_path(i))) for i in indices]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def load(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """All pairs of a complete store and its manifest.

        Raises:
            FileNotFoundError: if the store has no manifest (not finished: resume it with
                :func:`flowkit.reflow` and the same settings).
        """
        manifest = self.read_manifest()
        if manifest is None:
            raise FileNotFoundError(
                f"pair store {str(self.directory)!r} has no {MANIFEST}: it does not exist or is "
                "unfinished; run fk.reflow with the same settings and store to complete it"
            )
        return self.load_shards(list(range(manifest["num_shards"]))), manifest
