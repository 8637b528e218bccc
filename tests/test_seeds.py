"""flowkit.seeds.derive_seed: one derivation for stage, shard and rank streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowkit.couplings.store import shard_seed
from flowkit.distributed import rank_seed
from flowkit.seeds import derive_seed

HUGE = [2**53 + 1, 2**63 - 1, 2**64 + 5]


def test_deterministic_and_63_bit():
    for seed in [0, 1, 12345, *HUGE]:
        value = derive_seed(seed, 3)
        assert value == derive_seed(seed, 3)
        assert 0 <= value < 2**63
        torch.Generator().manual_seed(value)  # always a valid torch seed


def test_distinct_keys_give_distinct_seeds():
    for seed in [0, 7, *HUGE]:
        keys = [-(2**31), -2, -1, *range(200), 2**31 - 1]
        assert len({derive_seed(seed, k) for k in keys}) == len(keys)
    assert len({derive_seed(s, 0) for s in [0, 1, 2, *HUGE]}) == 3 + len(HUGE)
    assert derive_seed(5, 1, 2) != derive_seed(5, 2, 1)


def test_huge_seeds_do_not_overflow():
    assert derive_seed(2**63 - 1, 0) != derive_seed(2**63 - 2, 0)
    assert derive_seed(2**53 + 1, 0) != derive_seed(2**53, 0)  # not rounded through a float


def test_matches_the_seed_sequence_hash():
    state = np.random.SeedSequence([11, 4, 2**32 - 1]).generate_state(1, dtype=np.uint64)
    assert derive_seed(11, 4, -1) == int(state[0] >> 1)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", None])
def test_bad_seed_names_seed(seed):
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer"):
        derive_seed(seed, 0)


@pytest.mark.parametrize("key", [2**31, -(2**31) - 1, 0.5, False])
def test_bad_key_names_the_range(key):
    with pytest.raises(ValueError, match=r"keys must be integers in \[-2\*\*31, 2\*\*31\)"):
        derive_seed(0, key)


def test_shards_and_ranks_use_it():
    assert shard_seed(9, 3) == derive_seed(9, 3)
    # the pair-store shard seeds are unchanged by the move to derive_seed
    assert shard_seed(0, 0) == int(
        np.random.SeedSequence([0, 0]).generate_state(1, dtype=np.uint64)[0] >> 1
    )
    assert rank_seed(9, 0) == 9  # rank 0 runs the single-process stream
    assert rank_seed(9, 2) == derive_seed(9, 2)
    assert rank_seed(2**63 - 1, 1) == derive_seed(2**63 - 1, 1)
