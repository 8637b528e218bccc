"""Seed derivation: one scheme for every derived random stream (stages, shards, ranks).

A child stream is named by its parent's ``seed`` and one or more integer ``keys`` (a stage
index, a shard index, a rank); :func:`derive_seed` hashes them with numpy's
:class:`~numpy.random.SeedSequence`, so nearby keys give independent streams.

Example:
    >>> from flowkit.seeds import derive_seed
    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
    True
"""

from __future__ import annotations

import numpy as np

KEY_BITS = 32
"""Each key is one 32-bit word of the hashed entropy."""


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is a non-negative integer, else raise ``ValueError``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def key_word(key: object) -> int:
    """``key`` as one unsigned 32-bit word: two's complement for a negative key.

    Keys lie in ``[-2**31, 2**31)``, so the map is one-to-one (``-1`` becomes ``2**32 - 1``).

    Raises:
        ValueError: ``key`` is not an integer in that range.
    """
    half = 1 << (KEY_BITS - 1)
    if isinstance(key, bool) or not isinstance(key, int) or not -half <= key < half:
        raise ValueError(f"keys must be integers in [-2**31, 2**31), got {key!r}")
    return key % (1 << KEY_BITS)


def derive_seed(seed: int, *keys: int) -> int:
    """The seed of the child stream ``(seed, *keys)``, a non-negative 63-bit integer.

    ``derive_seed(seed, *keys) = SeedSequence([seed, *words]).generate_state(1, uint64)[0] >> 1``
    with ``words`` the keys as 32-bit words (:func:`key_word`). Any non-negative ``seed`` works,
    including seeds of 64 bits and more; the result always fits ``torch.Generator.manual_seed``.

    Args:
        seed: the parent seed, a non-negative integer.
        *keys: the child's position, integers in ``[-2**31, 2**31)`` (e.g. ``-1`` for a stream
            outside the numbered ones).

    Raises:
        ValueError: a negative or non-integer ``seed``, or a key out of range.

    Example:
        >>> derive_seed(7, 0)
        8460147692890830636
    """
    words = [check_seed(seed), *map(key_word, keys)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)
