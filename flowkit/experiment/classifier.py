"""The classifier of a run for ``classifier_accuracy``: fitted once on the real labelled data and
kept in the run directory (``classifier.safetensors``), so every evaluation of the run (and
``flowkit eval`` later) scores samples with the same classifier.

The real data are the data target's examples when the distribution lists them (``len`` and a
``labelled(index)`` method returning the rows at ``index``, None: all, and their labels, in the
units the flow is trained in, as ``digits`` and the file datasets do; at most
:data:`MAX_EXAMPLES` of them, drawn at random), else :data:`DRAWS` draws of a freshly built copy
of the target (so the run's own data stream is not advanced).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowkit.conditions import LABEL_KEY
from flowkit.errors import DamagedRunError
from flowkit.experiment.specs import registry
from flowkit.metrics.classifier import Classifier, fit_classifier
from flowkit.registry import split_spec

CLASSIFIER_FILE = "classifier.safetensors"
#: Labelled samples the classifier is fitted on at most (a random subset of larger data).
MAX_EXAMPLES = 20_000
#: Draws of a target that does not list its examples.
DRAWS = 5_000


def needs_classifier(metrics: list[Any]) -> bool:
    """Whether any metric spec of an evaluation is scored by the classifier."""
    return any(registry("metrics").build(m).inputs == "classes" for m in metrics)


def labelled_examples(target: Any, spec: Any, seed: int) -> tuple[Tensor, Tensor]:
    """Real samples and labels of the data target (at most :data:`MAX_EXAMPLES`).

    Raises:
        ValueError: the target gives no labels ``y``.
    """
    g = torch.Generator().manual_seed(seed)
    labelled = getattr(target, "labelled", None)
    if callable(labelled):
        n = len(target)
        x, y = labelled(torch.randperm(n, generator=g)[:MAX_EXAMPLES] if n > MAX_EXAMPLES else None)
    else:
        x, cond = registry("distributions").build(spec).sample_conditional(DRAWS, generator=g)
        y = cond.get(LABEL_KEY)
    if y is None:
        name = split_spec(spec, "distribution")[0]
        raise ValueError(
            f"classifier_accuracy needs labelled data, but the data target {name!r} gives no "
            "labels y (use a conditional target, e.g. {name: digits, conditional: true})"
        )
    return x, y


def run_classifier(ctx: Any) -> Classifier:
    """The run's classifier: read from the run directory, or fitted now and saved there.

    A damaged cached file is fitted again (the fit is deterministic).
    """
    if ctx.run.path(CLASSIFIER_FILE).is_file():
        try:
            return Classifier.from_state_dict(ctx.run.load_tensors(CLASSIFIER_FILE))
        except (DamagedRunError, KeyError):
            ctx.log(f"{CLASSIFIER_FILE} is damaged: fitting the classifier again")
    x, y = labelled_examples(ctx.target, ctx.experiment.data.target, ctx.experiment.seed)
    classifier = fit_classifier(x, y, seed=ctx.experiment.seed)
    ctx.run.save_tensors(CLASSIFIER_FILE, classifier.state_dict())
    ctx.log(f"classifier: held-out accuracy {classifier.held_out_accuracy:.3f} on real data")
    return classifier
