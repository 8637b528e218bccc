"""Compute what the figures show and write them as PNG into ``plots/`` of the run directory.

- ``loss.png``: training loss of every training stage;
- ``<stage>_samples.png``: target vs generated samples for several Euler NFE, one row per flow
  (scatter plots for 2-D data, image mosaics for images);
- ``<stage>_class_grid.png`` (labelled images): samples per class (rows) at every guidance
  scale of the evaluation (columns);
- ``<stage>_trajectories.png`` (2-D data): trajectories x0 -> x1 coloured by t, one panel per
  flow, which shows how reflow straightens them;
- ``<stage>_<metric>_vs_nfe.png``: the first sample metric against NFE;
- ``<stage>_straightness.png``: straightness and transport cost per flow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from einops import repeat

import flowkit
from flowkit.conditions import LABEL_KEY
from flowkit.experiment.context import Context
from flowkit.flow import Flow

#: Samples per class (one row of the class grid).
PER_CLASS = 8


def save(ctx: Context, name: str, figure: Any) -> None:
    ctx.run.save_figure(f"plots/{name}.png", figure)


def euler_samples(
    flows: Mapping[str, Flow], data: Mapping[str, Any], n: int, nfes: list[int]
) -> dict[str, dict[int, np.ndarray]]:
    """Samples of every flow with Euler at every NFE in ``nfes``, from the same ``n`` sources."""
    x0 = data["x0"][:n]
    cond = {k: v[:n] for k, v in data["cond"].items()} or None
    return {
        name: {
            k: flowkit.sample(flow, x0, solver="euler", steps=k, cond=cond).x.cpu().numpy()
            for k in nfes
        }
        for name, flow in flows.items()
    }


def trajectories(
    flows: Mapping[str, Flow], data: Mapping[str, Any], n: int, steps: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Euler trajectories ``(steps + 1, n, 2)`` of every flow and their times."""
    x0 = data["x0"][:n]
    cond = {k: v[:n] for k, v in data["cond"].items()} or None
    out, times = {}, None
    for name, flow in flows.items():
        sol = flowkit.sample(
            flow, x0, solver="euler", steps=steps, cond=cond, return_trajectory=True
        )
        out[name] = sol.trajectory.cpu().numpy()
        times = sol.times.cpu().numpy()
    return out, times


def class_grid_samples(
    flows: Mapping[str, Flow],
    data: Mapping[str, Any],
    classes: list[int],
    guidance: Sequence[Mapping[str, Any]],
    steps: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Euler samples of every flow: :data:`PER_CLASS` per class (class after class) for every
    guidance setting (``fk.sample``'s ``guidance``/``guidance_interval``; empty: unguided),
    from the same sources for every class and setting."""
    x0 = repeat(data["x0"][:PER_CLASS], "n ... -> (k n) ...", k=len(classes))
    cond = {LABEL_KEY: repeat(torch.tensor(classes, device=x0.device), "k -> (k n)", n=PER_CLASS)}
    return {
        name: {
            f"{g['guidance']:g}" if g else "none": flowkit.sample(
                flow, x0, solver="euler", steps=steps, cond=cond, **g
            )
            .x.cpu()
            .numpy()
            for g in guidance
        }
        for name, flow in flows.items()
    }


def write_plots(
    ctx: Context,
    flows: Mapping[str, Flow],
    data: Mapping[str, Any],
    stage: str,
    metric: str | None,
    guidance: Sequence[Mapping[str, Any]] = ({},),
) -> None:
    """Write every plot that applies to this data; ``metric`` is the one plotted against NFE,
    ``guidance`` the guidance settings (``fk.sample`` keywords) of the class grid's columns."""
    from flowkit import figures as figs  # matplotlib: imported when a run plots, not before

    opts = ctx.experiment.plots
    records = ctx.run.read_metrics()
    train = [r for r in records if r.get("kind") == "train"]
    if train:
        save(ctx, "loss", figs.loss_figure(train))
    target = data["x1"].cpu().numpy()
    is_2d = target.ndim == 2 and target.shape[1] == 2
    is_image = target.ndim == 4
    with torch.no_grad():
        if is_2d or is_image:
            n = min(opts.n_points, len(target)) if is_2d else min(64, len(target))
            samples = euler_samples(flows, data, n, opts.nfe)
            figure = figs.samples_figure if is_2d else figs.images_figure
            save(ctx, f"{stage}_samples", figure(target[:n], samples))
        labels = data["cond"].get(LABEL_KEY)
        if is_image and labels is not None:
            classes = sorted(set(labels.tolist()))
            grids = class_grid_samples(flows, data, classes, guidance, max(opts.nfe))
            save(ctx, f"{stage}_class_grid", figs.class_grid_figure(grids, classes, PER_CLASS))
        if is_2d and opts.trajectories > 0:
            traj, times = trajectories(flows, data, opts.trajectories, opts.trajectory_steps)
            save(ctx, f"{stage}_trajectories", figs.trajectories_figure(traj, times))
    rows = [r for r in records if r.get("stage") == stage]
    evals = [r for r in rows if r.get("kind") == "eval"]
    if evals and metric is not None:
        save(ctx, f"{stage}_{metric}_vs_nfe", figs.metric_vs_nfe_figure(evals, metric))
    straight = [r for r in rows if r.get("kind") == "straightness"]
    if straight:
        save(ctx, f"{stage}_straightness", figs.straightness_figure(straight))
