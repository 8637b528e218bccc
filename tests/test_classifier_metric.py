"""Classifier accuracy of conditional samples, the run's cached classifier, the class grid and the
report's ceiling line (issue 13, point 7)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import flowkit as fk
from flowkit.errors import ConfigError
from flowkit.experiment import RunDir, evaluate_run
from flowkit.experiment.classifier import CLASSIFIER_FILE, labelled_examples
from flowkit.experiment.schema import validate
from flowkit.metrics import Classifier, classifier_accuracy, fit_classifier


def blobs(n: int, seed: int, shift: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian classes in 4-D."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = shift * torch.eye(4)[:3]
    return centres[y] + torch.randn(n, 4, generator=g), y


def test_separable_classes_are_recognised_and_held_out_accuracy_measured() -> None:
    x, y = blobs(600, 0)
    clf = fit_classifier(x, y)
    assert clf.num_classes == 3 and clf.held_out_accuracy > 0.98
    x_new, y_new = blobs(300, 1)
    assert classifier_accuracy(x_new, y_new, clf) > 0.98
    # samples of the wrong class: none is accepted
    assert classifier_accuracy(x_new, (y_new + 1) % 3, clf) < 0.02


def test_held_out_accuracy_is_measured_on_unseen_samples() -> None:
    """Random labels: the fit memorises some training points, the held-out part stays at chance
    (1/3, binomial standard error sqrt(p(1-p)/n) = 0.047 for n = 100: 4 SE of slack)."""
    x, _ = blobs(500, 2)
    y = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(3))
    clf = fit_classifier(x, y, held_out=0.2, l2=0.0)
    assert abs(clf.held_out_accuracy - 1 / 3) < 4 * math.sqrt(2 / 9 / 100)


def test_the_classifier_round_trips_through_its_state_dict() -> None:
    x, y = blobs(300, 4)
    clf = fit_classifier(x, y)
    back = Classifier.from_state_dict(clf.state_dict())
    assert torch.equal(back.predict(x), clf.predict(x))
    assert back.held_out_accuracy == clf.held_out_accuracy


def test_the_metric_is_registered_for_labelled_samples() -> None:
    metric = fk.metrics.build("classifier_accuracy")
    assert metric.inputs == "classes" and metric.options == {}
    x, y = blobs(90, 5)
    assert metric(x, y, fit_classifier(x, y)) == classifier_accuracy(x, y, fit_classifier(x, y))


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (torch.zeros(30), TypeError, "integer tensor"),
        (torch.zeros(29, dtype=torch.long), ValueError, r"shape \(30,\)"),
    ],
)
def test_bad_labels(labels: torch.Tensor, error: type, message: str) -> None:
    x, y = blobs(30, 6)
    with pytest.raises(error, match=message):
        classifier_accuracy(x, labels, fit_classifier(x, y))


def test_samples_of_another_size_are_refused() -> None:
    x, y = blobs(30, 7)
    with pytest.raises(ValueError, match="fitted on samples of 4 values"):
        classifier_accuracy(torch.zeros(30, 5), y, fit_classifier(x, y))


def test_fit_options_are_checked() -> None:
    x, y = blobs(30, 8)
    with pytest.raises(ValueError, match="held_out"):
        fit_classifier(x, y, held_out=1.0)
    with pytest.raises(ValueError, match="at least 3"):
        fit_classifier(x[:2], y[:2])


def conditional_config(**evaluation: object) -> dict:
    return {
        "name": "cond",
        "seed": 0,
        "data": {"target": {"name": "digits", "conditional": True}},
        "model": {"name": "conv", "hidden": 8, "depth": 1, "num_classes": 10},
        "training": {"steps": 2, "batch_size": 8},
        "evaluation": {
            "n_samples": 20,
            "solvers": [{"name": "euler", "steps": [1]}],
            "metrics": ["classifier_accuracy"],
            "straightness": False,
            **evaluation,
        },
        "plots": {"nfe": [1]},
        "stages": [{"type": "train", "name": "fm"}, {"type": "evaluate"}],
    }


def test_validate_refuses_the_metric_without_labels() -> None:
    config = conditional_config()
    config["data"] = {"target": "digits"}
    config["model"] = {"name": "conv", "hidden": 8, "depth": 1}
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert "give no labels y" in dict(info.value.problems)["evaluation.metrics[0]"]


def test_a_run_fits_the_classifier_once_and_reports_its_ceiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fk.run(conditional_config(), out=tmp_path, quiet=True)
    run = result.run_dir
    cached = Classifier.from_state_dict(RunDir(run).load_tensors(CLASSIFIER_FILE))
    assert cached.held_out_accuracy > 0.9  # logistic regression on the 8x8 digits: about 0.97
    report = (run / "report.md").read_text()
    assert f"scores {cached.held_out_accuracy:.4g} on held-out real samples" in report
    assert "| classifier_accuracy |" in report
    assert (run / "plots" / "evaluate_class_grid.png").is_file()
    rows = [r for r in RunDir(run).read_metrics() if r["kind"] == "eval"]
    assert 0 <= rows[0]["classifier_accuracy"] <= 1

    def refit(*args: object, **kwargs: object) -> Classifier:
        raise AssertionError("the cached classifier should have been used")

    monkeypatch.setattr("flowkit.experiment.classifier.fit_classifier", refit)
    evaluate_run(run, quiet=True)


def test_the_classifier_reads_a_random_subset_of_listed_data_without_advancing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = torch.arange(50.0).repeat(3, 1).T  # row i is (i, i, i), its label i % 2
    data = fk.data.from_tensor(rows, labels=torch.arange(50) % 2)
    before = data.state_dict()
    monkeypatch.setattr("flowkit.experiment.classifier.MAX_EXAMPLES", 10)
    x, y = labelled_examples(data, "unused: the data list their rows", seed=0)
    assert x.shape == (10, 3) and len(set(x[:, 0].tolist())) == 10
    assert torch.equal(y, x[:, 0].long() % 2)
    assert data.state_dict() == before
    x_all, y_all = data.labelled()
    assert torch.equal(x_all, rows) and torch.equal(y_all, torch.arange(50) % 2)
