"""Set-up of the property suite (``tests/properties``): float64 math and a fixed torch seed.

The Hypothesis profiles (``ci``: derandomized, ``thorough``: many more examples) are registered
in ``tests/conftest.py``; see ``docs/testing.md``. Every sample a property draws comes from a
``torch.Generator`` seeded by a Hypothesis-drawn seed; the global torch seed is fixed as well so
that nothing depends on test order.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_torch_seed() -> None:
    torch.manual_seed(0)
