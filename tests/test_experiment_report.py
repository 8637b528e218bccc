"""Figures and report.md from fake data (no training needed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection

from flowkit import figures as figs
from flowkit.experiment.report import build_report
from flowkit.experiment.rundir import RunDir
from flowkit.experiment.schema import validate

PNG = b"\x89PNG\r\n\x1a\n"


def png_bytes(figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    return buf.getvalue()


def test_image_tile_places_image_r_c_in_block_r_c() -> None:
    images = np.arange(6, dtype=float)[:, None, None, None] * np.ones((6, 1, 2, 3))
    framed = figs.image_tile(images, cols=3, pad=1)
    assert framed.shape == (2 * 4, 3 * 5, 1)
    assert np.all(framed[0, :, 0] == 0) and np.all(framed[:, 4, 0] == 0)  # borders at the min
    assert np.all(framed[5:7, 6:9, 0] == 4)  # image (1, 1) inside its frame
    tile = figs.image_tile(images, cols=3, pad=0)
    assert tile.shape == (4, 9, 1)
    for r in range(2):
        for c in range(3):
            block = tile[2 * r : 2 * r + 2, 3 * c : 3 * c + 3, 0]
            assert np.all(block == 3 * r + c)


def test_samples_grid_has_a_row_per_flow_and_a_column_per_nfe() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(100, 2))
    samples = {f: {k: rng.normal(size=(100, 2)) for k in (1, 4, 100)} for f in ("a", "b")}
    fig = figs.samples_figure(target, samples)
    assert len(fig.axes) == 2 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == [
        "target",
        "a, NFE 1",
        "a, NFE 4",
        "a, NFE 100",
    ]
    assert png_bytes(fig).startswith(PNG)


def test_trajectories_are_coloured_by_time() -> None:
    rng = np.random.default_rng(0)
    times = np.linspace(0, 1, 11)
    x0, x1 = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    traj = times[:, None, None] * x1 + (1 - times[:, None, None]) * x0
    fig = figs.trajectories_figure({"flow": traj}, times)
    lines = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert len(lines) == 1
    assert len(lines[0].get_segments()) == 10 * 5
    colours = lines[0].get_array()
    assert np.allclose(
        sorted(set(np.round(colours, 6))), np.round(0.5 * (times[1:] + times[:-1]), 6)
    )
    assert png_bytes(fig).startswith(PNG)


def test_metric_vs_nfe_has_a_line_per_flow_and_solver() -> None:
    rows = [
        {"flow": f, "solver": "euler", "steps": k, "nfe": k, "w2": 1.0 / k}
        for f in ("a", "b")
        for k in (1, 2, 4)
    ] + [{"flow": "a", "solver": "dopri5", "steps": None, "nfe": 50, "w2": 0.1}]
    fig = figs.metric_vs_nfe_figure(rows, "w2")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3
    assert list(lines[0].get_xdata()) == [1, 2, 4]


def test_report_tables_and_embedded_plots(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp")
    config = {
        "name": "exp",
        "description": "a test",
        "seed": 0,
        "device": "cpu",
        "stages": [
            {"name": "t", "type": "train"},
            {"name": "r", "type": "reflow"},
            {"name": "evaluate", "type": "evaluate"},
        ],
    }
    run.mark_done("t", {"steps": 10, "final_loss": 0.5, "wall_time": 1.0})
    run.mark_done("evaluate", {"flows": ["t"]})
    for k in (1, 8):
        run.append_metric(
            {
                "kind": "eval",
                "stage": "evaluate",
                "flow": "t",
                "solver": "euler",
                "steps": k,
                "nfe": k,
                "seconds": 0.1,
                "w2": 0.25 / k,
            }
        )
    run.append_metric(
        {
            "kind": "straightness",
            "stage": "evaluate",
            "flow": "t",
            "straightness": 0.3,
            "path_energy": 1.1,
            "transport_cost": 2.0,
        }
    )
    run.write_text("plots/evaluate_samples.png", "png")
    text = build_report(validate(config), run)
    assert "| t | train | done | 10 steps, final loss 0.5, 1 s |" in text
    assert "| r | reflow | not run |  |" in text
    assert "| flow | solver | steps | NFE | w2 | seconds |" in text
    assert "| t | euler | 8 | 8 | 0.03125 | 0.1 |" in text
    assert "| t | 0.3 | 2 |" in text
    assert "![samples](plots/evaluate_samples.png)" in text
    assert "loss.png" not in text
    assert "Evaluation sets" not in text  # the data's own source and target
    config["stages"][2]["target"] = {"name": "moons", "stratified": True}
    config["evaluation"] = {"n_samples": 500, "source": None, "target": None}
    text = build_report(validate(config), run)
    assert (
        "Evaluation sets: 500 sources from the data source, 500 reference samples from "
        '`{"name": "moons", "stratified": true}`.'
    ) in text
