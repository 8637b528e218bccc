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
so resuming with another teacher or solver raises instead of mixing pairs. Every shard also
carries the sha256 of its tensors and metadata, and the (sealed) manifest lists them: a damaged
shard raises :class:`~flowkit.errors.DamagedRunError` on load, and is deleted and regenerated
when :func:`flowkit.reflow` resumes the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from flowkit.atomic import atomic_write, atomic_write_text
from flowkit.errors import DamagedRunError
from flowkit.integrity import read_json, seal, strict_json
from flowkit.seeds import derive_seed

MANIFEST = "manifest.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5})\.safetensors$")


class StoreMismatchError(ValueError):
    """A pair store on disk was made with another teacher, solver or options."""


def hash_tensors(h: Any, tensors: Mapping[str, Tensor]) -> None:
    """Feed ``tensors`` (name, dtype, shape and data, sorted by name) into the hash ``h``."""
    for name, value in sorted(tensors.items()):
        value = value.detach().cpu().contiguous()
        h.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())


def shard_digest(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> str:
    """sha256 of a shard's tensors and metadata (its ``sha256`` entry excepted)."""
    h = hashlib.sha256(canonical({k: v for k, v in metadata.items() if k != "sha256"}).encode())
    hash_tensors(h, tensors)
    return h.hexdigest()


def teacher_hash(field: Any) -> str:
    """sha256 of a teacher: its ``state_dict`` bytes (name, dtype, shape, data, sorted by name).

    A field that is not an ``nn.Module`` (e.g. an analytic velocity) is identified by its type's
    (or function's) qualified name only.
    """
    h = hashlib.sha256()
    if isinstance(field, nn.Module):
        hash_tensors(h, field.state_dict())
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
        """The manifest, or None while the store is incomplete.

        Raises:
            DamagedRunError: the manifest is unreadable, or its seal or fields are wrong.
        """
        if not self.manifest_path.exists():
            return None
        hint = (
            f"delete {str(self.manifest_path)!r}; fk.reflow (or resuming the run) with the same "
            "settings rebuilds it from the shards"
        )
        manifest = read_json(self.manifest_path, "pair store manifest", hint)
        shards = manifest.get("shards")
        count = manifest.get("num_shards")
        if (
            not isinstance(manifest.get("fingerprint"), dict)
            or not isinstance(count, int)
            or (shards is not None and (not isinstance(shards, list) or len(shards) != count))
        ):
            raise DamagedRunError(self.manifest_path, "pair store manifest", hint, "bad fields")
        return manifest

    def damaged_hint(self) -> str:
        return (
            "delete it and resume the run (or call fk.reflow with the same settings and store): "
            "the missing shard is regenerated"
        )

    def read_shard(self, index: int, expected: str | None = None) -> dict[str, Tensor]:
        """The tensors of shard ``index`` after checking its sha256 (that of its metadata and,
        if given, ``expected`` from the manifest).

        Raises:
            DamagedRunError: the shard is missing, unreadable or its content differs.
        """
        path = self.shard_path(index)
        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except FileNotFoundError:
            raise DamagedRunError(path, "pair shard", self.damaged_hint(), "missing") from None
        except Exception as err:  # any safetensors parse error
            raise DamagedRunError(
                path, "pair shard", self.damaged_hint(), f"unreadable: {err}"
            ) from None
        recorded = meta.get("sha256")
        if recorded is not None and shard_digest(tensors, meta) != recorded:
            raise DamagedRunError(path, "pair shard", self.damaged_hint(), "its sha256 differs")
        if expected is not None and recorded != expected:
            raise DamagedRunError(
                path, "pair shard", self.damaged_hint(), "not the shard manifest.json records"
            )
        return tensors

    def shard_metadata(self, index: int) -> dict[str, str]:
        """The metadata of shard ``index`` (fingerprint, index, nfe, sha256)."""
        with safe_open(self.shard_path(index), "pt") as f:
            return dict(f.metadata() or {})

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
            index = int(match.group(1))
            try:
                self.read_shard(index)
            except DamagedRunError as err:
                warnings.warn(
                    f"{err.path} is damaged ({err.reason}); it is regenerated", stacklevel=2
                )
                path.unlink(missing_ok=True)
                continue
            meta = self.shard_metadata(index)
            self.check(fingerprint, json.loads(meta.get("fingerprint", "{}")), path.name)
            done.add(index)
        return done

    def write_shard(
        self, index: int, tensors: Mapping[str, Tensor], fingerprint: Mapping[str, Any], nfe: int
    ) -> Path:
        """Atomically write shard ``index`` (tensors moved to CPU and made contiguous)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"fingerprint": canonical(fingerprint), "index": str(index), "nfe": str(nfe)}
        meta["sha256"] = shard_digest(data, meta)
        path = self.shard_path(index)
        atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=meta))
        return path

    def shard_nfe(self, index: int) -> int:
        """Function evaluations the teacher spent on shard ``index``."""
        return int(self.shard_metadata(index).get("nfe", 0))

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Atomically write ``manifest.json`` (sealed, with the sha256 of every shard) and
        remove stale temporary files."""
        count = manifest["num_shards"]
        shards = [self.shard_metadata(i).get("sha256") for i in range(count)]
        record = seal({**manifest, "shards": shards}, default=repr)
        atomic_write_text(self.manifest_path, strict_json(record, indent=2, default=repr))
        for path in self.directory.glob(".shard-*.tmp-*"):
            path.unlink(missing_ok=True)

    def load_shards(
        self, indices: list[int], digests: list[str | None] | None = None
    ) -> dict[str, Tensor]:
        """Concatenate the tensors of the given shards along the batch axis (each checked
        against its sha256, and against ``digests[i]`` when given)."""
        parts = [self.read_shard(i, None if digests is None else digests[i]) for i in indices]
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
        indices = list(range(manifest["num_shards"]))
        return self.load_shards(indices, manifest.get("shards")), manifest
