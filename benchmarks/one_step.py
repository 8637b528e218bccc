"""Ablation of the reflow + distillation recipe: which change makes one step as good as a hundred.

Run from the repository root (one torch thread)::

    python benchmarks/one_step.py --target moons --json /tmp/one_step_moons.json
    python benchmarks/one_step.py --target 8gaussians --json /tmp/one_step_8g.json
    python benchmarks/one_step.py --page /tmp/one_step_moons.json /tmp/one_step_8g.json
    python benchmarks/one_step.py --target moons --seeds 1 --variants baseline \\
        --recipe 'mine={"time_sampler": "u_shaped", "steps_2rf": 10000}'  # a subset, a recipe

For every training seed the pipeline is 1-RF (flow matching on N(0, I) -> target) -> reflow
pairs -> 2-RF -> one-step student, through the public API only (``fk.train``, ``fk.reflow``,
``fk.distill``). Each *recipe* changes one thing of the baseline recipe (or several, for the
combinations): the training loss of the 2-RF and the student, the 2-RF's time distribution,
the number of reflow pairs, the teacher solver's tolerance, the 2-RF's and the student's
initial weights, and whether the student distils the 2-RF or the 1-RF. Stages that two recipes
share (the 1-RF, pairs of the same solve, a 2-RF of the same settings) are trained once per
seed, and a recipe's wall and CPU times are the sums over the stages of its own pipeline.

Evaluation is the low-variance one of ``benchmarks/reflow_moons.py``: a quasi-random N(0, I)
source (scrambled Sobol) pushed through each flow against a stratified reference of the target
(moons: ``stratified: true``; 8gaussians: an equal share per mode, each a quasi-random Gaussian
set), ``--eval-repeats`` evaluation seeds, W2 exact. Reported: the median over the training
seeds of the mean over the evaluation seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from conditions import machine, write_page
from torch import Tensor

import flowkit as fk


@dataclass(frozen=True)
class Recipe:
    """What a pipeline does after its 1-RF (the fields the ablation changes).

    ``init``: the 2-RF's start (``teacher``: the 1-RF's weights, ``fresh``: new weights);
    ``distill_from``: whose pairs the student regresses (``2-rf``: new pairs of the 2-RF;
    ``1-rf``: the reflow pairs themselves, no second solve); ``student_init``: ``teacher`` (the
    flow it distils), ``2-rf`` or ``1-rf``; ``rf2``: False skips the 2-RF (needs a student that
    neither distils nor starts from it).
    """

    loss: str = "mse"
    time_sampler: str = "uniform"
    num_pairs: int = 20_000
    tol: float = 1e-4
    init: str = "teacher"
    distill_from: str = "2-rf"
    student_init: str = "teacher"
    steps_2rf: int = 2500
    steps_distill: int = 2500
    rf2: bool = True


#: The baseline recipe (that of ``benchmarks/reflow_moons.py`` and the default experiment until
#: issue 16) and one change of it per variant.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "pseudo-Huber loss": {"loss": "pseudo_huber"},
    "L1 loss": {"loss": "l1"},
    "U-shaped t (2-RF)": {"time_sampler": "u_shaped"},
    "2-RF from scratch": {"init": "fresh"},
    "50k pairs": {"num_pairs": 50_000},
    "teacher tol 1e-5": {"tol": 1e-5},
    "distil the 1-RF (init 2-RF)": {"distill_from": "1-rf", "student_init": "2-rf"},
    "distil the 1-RF (no 2-RF)": {"distill_from": "1-rf", "student_init": "1-rf", "rf2": False},
    "2x steps": {"steps_2rf": 5000, "steps_distill": 5000},
}


@dataclass
class Settings:
    """Fixed settings (those of ``benchmarks/reflow_moons.py``)."""

    target: str = "moons"
    hidden: int = 128
    depth: int = 3
    batch: int = 512
    lr: float = 3e-3
    lr_2rf: float = 1e-3
    lr_distill: float = 2e-3
    steps_1rf: int = 3000
    seeds: str = "0,1,2"
    eval_samples: int = 2000
    eval_repeats: int = 2


@dataclass
class Clock:
    """Wall and CPU seconds of named stages (CPU: this process, one torch thread)."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[name] = time.perf_counter() - wall
        self.cpu[name] = time.process_time() - cpu


def stratified_mixture(target: fk.data.GaussianMixture) -> Callable[[int, Any], Tensor]:
    """Draw ``n`` points of an equally weighted isotropic mixture with exactly ``n/K`` per
    component, each component's share a quasi-random Gaussian set (each point exactly
    distributed as its component)."""

    def draw(n: int, generator: torch.Generator) -> Tensor:
        k = len(target.means)
        parts = []
        for i, mean in enumerate(target.means):
            std = target.covariances[i].diag().sqrt()
            spec = {"name": "gaussian", "mean": mean.tolist(), "std": std.tolist()}
            part = fk.data.build({**spec, "quasi_random": True})
            parts.append(part.sample(n // k + (i < n % k), generator=generator))
        return torch.cat(parts)

    return draw


def reference_sampler(target: str) -> Callable[[int, Any], Tensor]:
    """The low-variance reference of ``target``."""
    if target == "moons":
        moons = fk.data.build({"name": "moons", "stratified": True})
        return lambda n, g: moons.sample(n, generator=g)
    return stratified_mixture(fk.data.build(target))


@dataclass
class EvalSets:
    """Quasi-random sources, references and the W2 floor of each evaluation seed."""

    x0: list[Tensor]
    y: list[Tensor]
    floor: list[float]

    @classmethod
    def make(cls, s: Settings) -> EvalSets:
        draw, sets = reference_sampler(s.target), cls([], [], [])
        source = fk.data.build({"name": "gaussian", "quasi_random": True})
        for repeat in range(s.eval_repeats):
            g = torch.Generator().manual_seed(2000 + repeat)
            y, y_floor = draw(s.eval_samples, g), draw(s.eval_samples, g)
            sets.x0.append(source.sample(s.eval_samples, generator=g))
            sets.y.append(y)
            sets.floor.append(fk.metrics.w2(y, y_floor))
        return sets

    def w2(self, flow: fk.Flow, steps: int) -> float:
        """Mean W2 after ``steps`` Euler steps over the evaluation seeds."""
        values = [
            fk.metrics.w2(fk.sample(flow, x0, solver="euler", steps=steps).x, y)
            for x0, y in zip(self.x0, self.y, strict=True)
        ]
        return statistics.fmean(values)


def new_flow(s: Settings, seed: int) -> fk.Flow:
    torch.manual_seed(seed)
    model = {"name": "mlp", "dim": 2, "hidden": s.hidden, "depth": s.depth, "time_frequencies": 0}
    return fk.Flow(fk.models.build(model), "rectified")


class SeedRun:
    """The stages of one training seed, each trained once and shared by the recipes."""

    def __init__(self, s: Settings, seed: int) -> None:
        self.s, self.seed, self.clock, self.cache = s, seed, Clock(), {}
        self.coupling = fk.couplings.build(
            {"name": "independent", "source": "gaussian", "target": s.target}
        )
        self.train = dict(batch_size=s.batch, lr_schedule="cosine", progress=False)

    def stage(self, key: tuple, make: Callable[[], Any]) -> tuple[Any, str]:
        """The cached result of stage ``key`` (made and timed on first use) and its name."""
        name = repr(key)
        if key not in self.cache:
            with self.clock(name):
                self.cache[key] = make()
        return self.cache[key], name

    def rf1(self, r: Recipe | None = None) -> tuple[fk.Flow, str]:
        """The 1-RF (the same for every recipe)."""

        def make() -> fk.Flow:
            flow = new_flow(self.s, self.seed)
            s = self.s
            fk.train(flow, self.coupling, s.steps_1rf, lr=s.lr, seed=self.seed, **self.train)
            return flow

        return self.stage(("1-RF",), make)

    def pairs(self, r: Recipe) -> tuple[Any, str]:
        rf1 = self.rf1()[0]
        return self.stage(
            ("pairs", r.num_pairs, r.tol),
            lambda: fk.reflow(
                rf1,
                self.coupling,
                solver="dopri5",
                num_pairs=r.num_pairs,
                chunk_size=r.num_pairs,
                seed=self.seed,
                progress=False,
                rtol=r.tol,
                atol=r.tol,
            ),
        )

    def rf2(self, r: Recipe) -> tuple[fk.Flow, str]:
        rf1, pairs = self.rf1()[0], self.pairs(r)[0]

        def make() -> fk.Flow:
            flow = copy.deepcopy(rf1) if r.init == "teacher" else new_flow(self.s, self.seed + 7)
            fk.train(
                flow,
                pairs,
                r.steps_2rf,
                lr=self.s.lr_2rf,
                seed=self.seed + 1,
                loss=r.loss,
                time_sampler=r.time_sampler,
                **self.train,
            )
            return flow

        key = ("2-RF", r.num_pairs, r.tol, r.init, r.loss, r.time_sampler, r.steps_2rf)
        return self.stage(key, make)

    def student(self, r: Recipe) -> tuple[fk.Flow, list[str]]:
        """The recipe's student and the names of every stage of its pipeline."""
        names = [self.rf1()[1], self.pairs(r)[1]]
        if r.rf2:
            names.append(self.rf2(r)[1])
        starts = {"1-rf": self.rf1, "2-rf": self.rf2}
        teacher = starts[r.distill_from]
        init = r.distill_from if r.student_init == "teacher" else r.student_init

        def make() -> fk.Flow:
            student = copy.deepcopy(starts[init](r)[0]) if init != "fresh" else None
            if student is None:
                student = new_flow(self.s, self.seed + 8)
            source = self.pairs(r)[0] if r.distill_from == "1-rf" else teacher(r)[0]
            return fk.distill(
                source,
                student,
                1,
                coupling=self.coupling,
                num_pairs=r.num_pairs,
                solver="dopri5",
                chunk_size=r.num_pairs,
                seed=self.seed + 2,
                steps=r.steps_distill,
                lr=self.s.lr_distill,
                loss=r.loss,
                solver_options={"rtol": r.tol, "atol": r.tol},
                **self.train,
            )

        student, name = self.stage(("student", *asdict(r).values()), make)
        return student, [*names, name]


@dataclass
class Result:
    """One recipe at one seed: W2 (mean over evaluation seeds) and its pipeline's time."""

    recipe: str
    seed: int
    w2: dict[str, float]
    wall: float
    cpu: float


def run_recipes(
    s: Settings, recipes: dict[str, Recipe], sets: EvalSets, log: Callable[[str], None]
) -> list[Result]:
    results = []
    for seed in map(int, s.seeds.split(",")):
        run = SeedRun(s, seed)
        rf1 = run.rf1()[0]
        base = {"1-RF Euler 100": sets.w2(rf1, 100)}
        for label, r in recipes.items():
            student, names = run.student(r)
            w2 = {**base, **{f"student Euler {n}": sets.w2(student, n) for n in (1, 2, 4)}}
            if r.rf2:
                rf2 = run.rf2(r)[0]
                w2.update({f"2-RF Euler {n}": sets.w2(rf2, n) for n in (1, 100)})
            wall = sum(run.clock.wall[n] for n in names)
            cpu = sum(run.clock.cpu[n] for n in names)
            results.append(Result(label, seed, w2, wall, cpu))
            cells = ", ".join(f"{k} {v:.4f}" for k, v in w2.items())
            log(f"{s.target} seed {seed} {label}: {cells}; wall {wall:.1f} s, cpu {cpu:.1f} s")
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


COLUMNS = (
    "student Euler 1",
    "student Euler 2",
    "student Euler 4",
    "2-RF Euler 1",
    "2-RF Euler 100",
    "1-RF Euler 100",
)


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per recipe: the median over seeds of each W2 column, wall and CPU time."""
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["recipe"] for r in results):
        rows = [r for r in results if r["recipe"] == label]
        cells = {c: median([r["w2"][c] for r in rows if c in r["w2"]]) for c in COLUMNS}
        cells["wall"] = median([r["wall"] for r in rows])
        cells["cpu"] = median([r["cpu"] for r in rows])
        cells["seeds"] = len(rows)
        out[label] = cells
    return out


def table(results: list[dict[str, Any]], floor: list[float]) -> str:
    """Markdown table of one target's recipes."""
    rows = summary(results)
    base = rows.get("baseline", {}).get("student Euler 1", math.nan)
    head = "| recipe | seeds | " + " | ".join(f"W2 {c}" for c in COLUMNS)
    lines = [
        head + " | student vs baseline | wall (s) | CPU (s) |",
        "|---|---|" + "---|" * (len(COLUMNS) + 3),
    ]
    for label, cells in rows.items():
        w2 = " | ".join("–" if math.isnan(cells[c]) else f"{cells[c]:.3f}" for c in COLUMNS)
        change = cells["student Euler 1"] - base
        lines.append(
            f"| {label} | {cells['seeds']} | {w2} | {change:+.3f} | {cells['wall']:.0f} "
            f"| {cells['cpu']:.1f} |"
        )
    lines.append(
        f"\nW2 floor (two independent reference sets): {statistics.fmean(floor):.3f}"
    )
    return "\n".join(lines)


def page(paths: list[str], notes: str) -> str:
    """The Markdown page from the JSON files of one or more runs (grouped by target)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        runs.setdefault(data["settings"]["target"], []).append(data)
    paragraphs = __doc__.replace("``", "`").split("\n\n")
    usage = "\n".join(line.strip() for line in paragraphs[2].splitlines())
    parts = [
        "# Benchmark: the one-step recipe (reflow + distillation ablation)\n",
        f"`benchmarks/one_step.py` (issue 16):\n\n```bash\n{usage}\n```\n",
        "\n\n".join(paragraphs[3:]).strip() + "\n",
    ]
    for target, datas in runs.items():
        s = datas[0]["settings"]
        when = "; ".join(
            f"finished {d['date']}, load average {d['load_before']} before, {d['load_after']} after"
            for d in datas
        )
        parts.append(
            f"## N(0, I) → {target}\n\n"
            f"Median over the training seeds (each W2: mean over {s['eval_repeats']} "
            f"evaluation sets of {s['eval_samples']} samples). Runs: {when}. "
            f"{datas[0]['machine']}. Wall and CPU seconds are those of the recipe's whole "
            "pipeline (1-RF, pairs, 2-RF, student; evaluation excluded), one torch thread; the "
            "machine was shared, so wall times are inflated by the other processes and the "
            "CPU time is the better measure of cost.\n"
        )
        results = [r for d in datas for r in d["results"]]
        parts.append(table(results, datas[0]["floor"]) + "\n")
    parts.append(notes)
    return "\n".join(parts)


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(Settings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS"
    )
    parser.add_argument(
        "--recipe",
        action="append",
        default=[],
        help='extra recipe "LABEL=JSON" of Recipe fields, e.g. \'all={"loss": "pseudo_huber"}\'',
    )
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--page", nargs="+", help="write docs/benchmarks/one_step.md from JSONs")
    parser.add_argument("--notes", help="Markdown file appended to the page (the findings)")
    args = vars(parser.parse_args())
    pages, notes_file = args.pop("page"), args.pop("notes")
    if pages:
        notes = Path(notes_file).read_text() if notes_file else ""
        write_page(page(pages, notes), "docs/benchmarks/one_step.md")
        return
    names, extra, out = args.pop("variants"), args.pop("recipe"), args.pop("json")
    s = Settings(**args)
    torch.set_num_threads(1)
    recipes = {n: replace(Recipe(), **VARIANTS[n]) for n in names.split(",") if n}
    for item in extra:
        label, spec = item.split("=", 1)
        recipes[label] = replace(Recipe(), **json.loads(spec))
    before = load_average()
    sets = EvalSets.make(s)
    results = run_recipes(s, recipes, sets, lambda line: print(line, flush=True))
    data = {
        "settings": asdict(s),
        "recipes": {k: asdict(v) for k, v in recipes.items()},
        "results": [asdict(r) for r in results],
        "floor": sets.floor,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_before": before,
        "load_after": load_average(),
    }
    print(table(data["results"], data["floor"]))
    if out:
        with open(out, "w") as f:
            json.dump(data, f, indent=1)


if __name__ == "__main__":
    main()
