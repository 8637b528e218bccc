"""Figures of samples, trajectories and metrics, as pure functions of arrays and metric records
(matplotlib, no pyplot).

Each function returns a :class:`matplotlib.figure.Figure`, to save or show as you like: an
experiment's :mod:`flowkit.experiment.plots` computes the data and saves them into the run
directory, ``flowkit sample --plot`` uses :func:`single_figure`.

Example:
    >>> import numpy as np
    >>> from flowkit.figures import single_figure
    >>> single_figure(np.random.randn(500, 2), "samples").savefig("samples.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from einops import rearrange
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

PANEL = 2.6


def panel_grid(rows: int, cols: int, square: bool = True) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL * cols, PANEL * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False, sharex=square, sharey=square))
    return fig, axes


def limits(points: np.ndarray, margin: float = 0.15) -> tuple[tuple[float, float], ...]:
    """Axis limits around the 1st–99th percentiles of ``points`` (N, 2)."""
    lo, hi = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    pad = margin * (hi - lo).max()
    return (lo[0] - pad, hi[0] + pad), (lo[1] - pad, hi[1] + pad)


def loss_figure(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Training loss against step, one line per training stage (log scale)."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    stages = list(dict.fromkeys(r["stage"] for r in records))
    for stage in stages:
        rows = [r for r in records if r["stage"] == stage]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=stage)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="Training loss")
    ax.legend()
    return fig


def samples_figure(target: np.ndarray, samples: Mapping[str, Mapping[int, np.ndarray]]) -> Figure:
    """Scatter grid: one row per flow, the target then one column per Euler NFE."""
    nfes = sorted({k for per_flow in samples.values() for k in per_flow})
    fig, axes = panel_grid(len(samples), len(nfes) + 1)
    xlim, ylim = limits(target)
    for row, (name, per_flow) in enumerate(samples.items()):
        axes[row, 0].scatter(target[:, 0], target[:, 1], s=2, alpha=0.5, color="tab:gray")
        axes[row, 0].set_title("target" if row == 0 else "")
        axes[row, 0].set_ylabel(name)
        for col, nfe in enumerate(nfes, start=1):
            x = per_flow[nfe]
            axes[row, col].scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="tab:blue")
            axes[row, col].set_title(f"{name}, NFE {nfe}", fontsize=9)
    for ax in axes.flat:
        ax.set(xlim=xlim, ylim=ylim, xticks=[], yticks=[])
    return fig


def trajectories_figure(trajectories: Mapping[str, np.ndarray], times: np.ndarray) -> Figure:
    """Trajectories ``x0 -> x1`` (T+1, B, 2) per flow, segments coloured by ``t``."""
    fig, axes = panel_grid(1, len(trajectories))
    everything = np.concatenate([t.reshape(-1, 2) for t in trajectories.values()])
    xlim, ylim = limits(everything, 0.05)
    line = None
    for ax, (name, traj) in zip(axes[0], trajectories.items(), strict=True):
        segments = rearrange(np.stack([traj[:-1], traj[1:]]), "two t b d -> (b t) two d")
        t_mid = np.tile(0.5 * (times[:-1] + times[1:]), traj.shape[1])
        line = LineCollection(segments, cmap="viridis", linewidths=0.8, alpha=0.8)
        line.set_array(t_mid)
        line.set_clim(0.0, 1.0)
        ax.add_collection(line)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=6, color="black", label="x0")
        ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=6, color="tab:orange", label="x1")
        ax.set(xlim=xlim, ylim=ylim, xticks=[], yticks=[], title=name)
    axes[0, 0].legend(loc="lower left", fontsize=7)
    fig.colorbar(line, ax=list(axes[0]), label="t", shrink=0.8)
    return fig


def metric_vs_nfe_figure(rows: Sequence[Mapping[str, Any]], metric: str) -> Figure:
    """``metric`` against NFE (log-log), one line per flow and solver; adaptive solves as points."""
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    rows = [r for r in rows if r.get(metric) is not None]  # diverged solves have no value
    keys = list(dict.fromkeys((r["flow"], r["solver"], r["steps"] is None) for r in rows))
    for flow, solver, adaptive in keys:
        sel = [
            r
            for r in rows
            if (r["flow"], r["solver"], r["steps"] is None) == (flow, solver, adaptive)
        ]
        sel.sort(key=lambda r: r["nfe"])
        style = "*" if adaptive else "o-"
        ax.plot(
            [r["nfe"] for r in sel], [r[metric] for r in sel], style, label=f"{flow} ({solver})"
        )
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel=metric, title=f"{metric} vs NFE")
    ax.legend(fontsize=7)
    return fig


def straightness_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Bars of straightness (and transport cost) per flow."""
    fig, axes = panel_grid(1, 2, square=False)
    names = [r["flow"] for r in rows]
    for ax, key in zip(axes[0], ("straightness", "transport_cost"), strict=True):
        ax.bar(names, [r[key] for r in rows], color="tab:blue")
        ax.set(title=key.replace("_", " "), yscale="log" if key == "straightness" else "linear")
        ax.tick_params(axis="x", labelrotation=30)
    fig.set_size_inches(7, 3.2)
    return fig


def image_tile(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """``(r·c, C, H, W)`` images -> one ``(r·(H + 2p), c·(W + 2p), C)`` mosaic (einops).

    Each image gets a border of ``pad`` pixels at the images' minimum value, so that tight
    images (8×8 digits) stay apart.
    """
    rows = len(images) // cols
    framed = np.pad(
        images[: rows * cols],
        ((0, 0), (0, 0), (pad, pad), (pad, pad)),
        constant_values=images.min(),
    )
    return rearrange(framed, "(r c) ch h w -> (r h) (c w) ch", c=cols)


def show_mosaic(
    ax: Any, images: np.ndarray, cols: int, lo: float | None = None, hi: float | None = None
) -> int:
    """Draw ``images`` ``(N, C, H, W)`` as a mosaic of ``cols`` columns on ``ax``, without ticks;
    returns its height. Values are shown from ``lo`` to ``hi`` (default: the mosaic's range): as
    grey levels for one channel, rescaled to [0, 1] for RGB (what matplotlib expects)."""
    tile = image_tile(images, cols)
    if tile.shape[-1] == 1:
        ax.imshow(tile[..., 0], cmap="gray", vmin=lo, vmax=hi)
    else:
        lo = tile.min() if lo is None else lo
        hi = tile.max() if hi is None else hi
        ax.imshow(np.clip((tile - lo) / max(hi - lo, 1e-12), 0.0, 1.0))
    ax.set(xticks=[], yticks=[])
    return tile.shape[0]


def images_figure(
    target: np.ndarray, samples: Mapping[str, Mapping[int, np.ndarray]], cols: int = 8
) -> Figure:
    """Image mosaics: one row per flow, the target then one column per Euler NFE."""
    nfes = sorted({k for per_flow in samples.values() for k in per_flow})
    fig, axes = panel_grid(len(samples), len(nfes) + 1)
    lo, hi = np.percentile(target, 1), np.percentile(target, 99)
    for row, (name, per_flow) in enumerate(samples.items()):
        panels = [("target", target), *((f"{name}, NFE {k}", per_flow[k]) for k in nfes)]
        for col, (title, imgs) in enumerate(panels):
            show_mosaic(axes[row, col], imgs, cols, lo, hi)
            axes[row, col].set_title(title, fontsize=9)
    return fig


def class_grid_figure(
    grids: Mapping[str, Mapping[str, np.ndarray]], classes: Sequence[int], per_class: int
) -> Figure:
    """Samples per class: one panel per flow (rows) and guidance scale (columns); in each panel
    one row of ``per_class`` images ``(C, H, W)`` per class, labelled on the left."""
    scales = list(dict.fromkeys(s for per_flow in grids.values() for s in per_flow))
    fig, axes = panel_grid(len(grids), len(scales), square=False)
    first = next(iter(next(iter(grids.values())).values()))
    lo, hi = np.percentile(first, 1), np.percentile(first, 99)
    for row, (name, per_flow) in enumerate(grids.items()):
        for col, scale in enumerate(scales):
            ax = axes[row, col]
            height = show_mosaic(ax, per_flow[scale], per_class, lo, hi)
            centres = [height * (i + 0.5) / len(classes) for i in range(len(classes))]
            ax.set_yticks(centres, [str(c) for c in classes])
            ax.set_title(f"{name}, guidance {scale}", fontsize=9)
    return fig


def single_figure(x: np.ndarray, title: str, cols: int = 8) -> Figure:
    """One panel: a scatter of 2-D points ``(N, 2)`` or a mosaic of images ``(N, C, H, W)``."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    if x.ndim == 4:
        show_mosaic(ax, x[: cols * cols], min(cols, len(x)))
    else:
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
    ax.set_title(title)
    return fig
