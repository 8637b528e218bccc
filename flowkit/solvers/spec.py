"""A solver spec as users write it: ``name`` or ``{name: ..., steps: ..., **options}``.

The spec's sampling arguments are the grid keywords of :func:`flowkit.sample`
(:data:`~flowkit.solvers.sampling.GRID_ARGUMENTS`: ``steps``, ``grid``, ``shift``, ...);
everything else is an option of the solver (``rtol``, ``eta``, ...). A list of ``steps`` stands
for one solve per step count (an evaluation's rows).

Example:
    >>> spec = SolverSpec.parse({"name": "euler", "steps": [1, 4]})
    >>> [run.arguments() for run in spec.runs()]
    [{'solver': 'euler', 'steps': 1}, {'solver': 'euler', 'steps': 4}]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowkit.registry import split_spec
from flowkit.solvers.sampling import GRID_ARGUMENTS


@dataclass
class SolverSpec:
    """A solver with its sampling arguments, as ``fk.sample(flow, x0, **spec.arguments())``.

    Attributes:
        name: the registered solver.
        sample_args: ``steps``, ``grid``, ``shift``, ... (keywords of :func:`flowkit.solvers.plan`).
        options: the solver's own options (``rtol``, ``atol``, ``eta``, ...).
    """

    name: str
    sample_args: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any]) -> SolverSpec:
        name, options = split_spec(spec, "solver")
        return cls(
            name,
            {k: v for k, v in options.items() if k in GRID_ARGUMENTS},
            {k: v for k, v in options.items() if k not in GRID_ARGUMENTS},
        )

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``fk.sample`` / ``fk.reflow`` (solver name included)."""
        return {"solver": self.name, **self.sample_args, **self.options}

    def runs(self) -> list[SolverSpec]:
        """One spec per entry of a ``steps`` list, else ``[self]``."""
        steps = self.sample_args.get("steps")
        if not isinstance(steps, list):
            return [self]
        return [
            SolverSpec(self.name, {**self.sample_args, "steps": k}, self.options) for k in steps
        ]
