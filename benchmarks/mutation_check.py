"""Mutation check of the property suite: each mutation of flowkit must make it fail.

For every mutation below, the package ``flowkit/`` is copied into a temporary directory, one exact
text substitution is applied (the target text must occur exactly once, otherwise the check stops:
it cannot rot silently when the code changes), and ``tests/properties`` is run against the copy::

    python -m pytest tests/properties -x -q -p no:cacheprovider

with the copy first on ``PYTHONPATH`` (and as the working directory, so ``python -m`` does not put
the original checkout first), under the Hypothesis profile ``mutation`` (the ``ci`` examples, no
shrinking, no example database). A mutant is *caught* when the suite fails. An unmutated copy is
run first and must pass. The result is a markdown table, printed and written into
``docs/testing.md`` between the ``mutation-report`` markers.

Usage::

    python benchmarks/mutation_check.py            # all mutations, 2 processes
    python benchmarks/mutation_check.py --jobs 1 --only heun_is_euler --no-write
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "tests" / "properties"
REPORT = REPO / "docs" / "testing.md"
START, END = "<!-- mutation-report:start -->", "<!-- mutation-report:end -->"


@dataclass(frozen=True)
class Mutation:
    """Replace the single occurrence of ``old`` by ``new`` in ``flowkit/<file>``."""

    name: str
    file: str
    old: str
    new: str
    description: str


def _sign(name: str, file: str, old: str, new: str, what: str) -> Mutation:
    return Mutation(f"{name}_derivative_sign", file, old, new, f"{name}: wrong sign of {what}")


MUTATIONS: list[Mutation] = [
    _sign(
        "rectified",
        "paths/schedules/rectified.py",
        "        return -torch.ones_like(t)",
        "        return torch.ones_like(t)",
        "b'(t)",
    ),
    _sign(
        "cosine",
        "paths/schedules/cosine.py",
        "        return HALF_PI * torch.sin(HALF_PI * (1.0 - t))",
        "        return -HALF_PI * torch.sin(HALF_PI * (1.0 - t))",
        "a'(t)",
    ),
    _sign(
        "vp",
        "paths/schedules/vp.py",
        "        return self.beta_min + (self.beta_max - self.beta_min) * s",
        "        return -(self.beta_min + (self.beta_max - self.beta_min) * s)",
        "G'(s) = β(s), hence of a'(t) and b'(t)",
    ),
    _sign(
        "linear_vp",
        "paths/schedules/linear_vp.py",
        "        return -t / self.b(t)",
        "        return t / self.b(t)",
        "b'(t)",
    ),
    _sign(
        "polynomial",
        "paths/schedules/polynomial.py",
        "        return -self.da(t)",
        "        return self.da(t)",
        "b'(t)",
    ),
    _sign(
        "edm",
        "paths/schedules/edm.py",
        "        return 0.5 * torch.exp(0.5 * logsigmoid(lam) + logsigmoid(-lam))",
        "        return -0.5 * torch.exp(0.5 * logsigmoid(lam) + logsigmoid(-lam))",
        "a'(t)",
    ),
    _sign(
        "ldm_linear",
        "paths/schedules/ldm_linear.py",
        "        return -self.num_train_timesteps * torch.log1p(-q * q)",
        "        return self.num_train_timesteps * torch.log1p(-q * q)",
        "G'(s), hence of a'(t) and b'(t)",
    ),
    _sign(
        "custom",
        "paths/schedules/custom.py",
        "    return grad\n",
        "    return -grad\n",
        "the autograd derivatives a'(t), b'(t)",
    ),
    Mutation(
        "heun_is_euler",
        "solvers/fixed.py",
        "        return x.add(k1 + k2, alpha=0.5 * h)",
        "        return x.add(k1, alpha=h)",
        "Heun degraded to Euler (k2 computed, not used)",
    ),
    Mutation(
        "reflow_pairs_shuffled",
        "couplings/reflow_job.py",
        '    tensors = {"x0": x0, "x1": x1,',
        '    tensors = {"x0": x0, "x1": x1[torch.randperm(size, generator=generator)],',
        "reflow pairs shuffled within a shard",
    ),
    Mutation(
        "epsilon_conversion_factor",
        "paths/conversions.py",
        "    return (da / a) * x_t - (da * b / a - db) * x0",
        "    return (da / a) * x_t - 0.5 * (da * b / a - db) * x0",
        "wrong factor (1/2) on ε in the epsilon -> velocity conversion",
    ),
    Mutation(
        "mask_off_by_one_step",
        "solvers/base.py",
        "            gates = [ctx.gates(t) for t in times[:-1].tolist()]",
        "            gates = [ctx.gates(t) for t in times[1:].tolist()]",
        "conditioning mask gated at each step's end time (one step early)",
    ),
    Mutation(
        "time_shift_twice",
        "solvers/grid.py",
        "        g = shift_time(g, shift)",
        "        g = shift_time(shift_time(g, shift), shift)",
        "the time shift of a generated grid applied twice",
    ),
]


class MutationTargetError(RuntimeError):
    """The text a mutation replaces is missing or not unique: update the mutation."""


@dataclass
class Outcome:
    name: str
    description: str
    status: str
    seconds: float
    detail: str


def make_copy(root: Path, mutation: Mutation | None) -> None:
    """Copy ``flowkit/`` under ``root`` and apply ``mutation`` (exactly one occurrence)."""
    shutil.copytree(
        REPO / "flowkit", root / "flowkit", ignore=shutil.ignore_patterns("__pycache__")
    )
    if mutation is None:
        return
    path = root / "flowkit" / mutation.file
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise MutationTargetError(
            f"mutation {mutation.name!r}: expected exactly one occurrence of {mutation.old!r} in "
            f"flowkit/{mutation.file}, found {count}; update the mutation to the current code"
        )
    path.write_text(text.replace(mutation.old, mutation.new))


def environment(root: Path) -> dict[str, str]:
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "HYPOTHESIS_PROFILE": "mutation",
        "OMP_NUM_THREADS": "1",
    }


def check_import(root: Path, env: dict[str, str]) -> None:
    """Make sure the copy, not the checkout, is the ``flowkit`` the suite imports."""
    out = subprocess.run(
        [sys.executable, "-c", "import flowkit; print(flowkit.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the suite would import flowkit from {out}, not from the copy {root}")


def run_suite(mutation: Mutation | None, timeout: float) -> Outcome:
    """Run the property suite against a fresh (mutated) copy of the package."""
    name = "baseline (no mutation)" if mutation is None else mutation.name
    description = "unmodified copy: must pass" if mutation is None else mutation.description
    with tempfile.TemporaryDirectory(prefix="flowkit-mutant-") as tmp:
        root = Path(tmp)
        make_copy(root, mutation)
        env = environment(root)
        check_import(root, env)
        cmd = [sys.executable, "-m", "pytest", str(SUITE), "-x", "-q", "-p", "no:cacheprovider"]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return Outcome(name, description, "timeout", time.perf_counter() - start, "")
        seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    failed = re.findall(r"^FAILED (\S+)", output, flags=re.MULTILINE)
    status = {0: "passed", 1: "failed"}.get(proc.returncode, f"error (exit {proc.returncode})")
    detail = failed[0].split("::", 1)[-1] if failed else output.strip().splitlines()[-1]
    return Outcome(name, description, status, seconds, detail)


def table(outcomes: list[Outcome]) -> str:
    """Markdown table: mutation, what it breaks, caught/missed, the first failing property."""
    rows = [
        "| mutation | what it breaks | result | first failing property | time (s) |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.name.startswith("baseline"):
            result = "ok (passes)" if o.status == "passed" else f"BROKEN ({o.status})"
        else:
            result = "caught" if o.status == "failed" else f"MISSED ({o.status})"
        rows.append(f"| `{o.name}` | {o.description} | {result} | `{o.detail}` | {o.seconds:.0f} |")
    return "\n".join(rows)


def write_report(text: str) -> None:
    """Replace the text between the report markers of docs/testing.md."""
    doc = REPORT.read_text()
    if START not in doc or END not in doc:
        raise RuntimeError(f"{REPORT} lacks the markers {START} / {END}")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    REPORT.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="parallel suite runs (default 2)")
    parser.add_argument("--only", nargs="*", help="names of the mutations to run")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per suite run")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/testing.md")
    args = parser.parse_args(argv)
    names = {m.name for m in MUTATIONS}
    unknown = sorted(set(args.only or []) - names)
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; choose from {sorted(names)}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    with tempfile.TemporaryDirectory() as probe:
        for mutation in chosen:  # fail loudly on a stale target before any long run
            make_copy(Path(probe) / mutation.name, mutation)
    start = time.perf_counter()
    baseline = run_suite(None, args.timeout)
    print(table([baseline]), flush=True)
    if baseline.status != "passed":
        print("the property suite fails without any mutation; fix that first", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda m: run_suite(m, args.timeout), chosen))
    report = table([baseline, *outcomes])
    caught = sum(o.status == "failed" for o in outcomes)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = (
        f"{caught}/{len(outcomes)} mutations caught ({stamp}, {args.jobs} parallel runs, "
        f"{time.perf_counter() - start:.0f} s in total).\n\n{report}"
    )
    print(summary)
    if not args.no_write:
        write_report(summary)
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
