"""Checks that need the whole experiment: stage names and references, and the built data.

Run by :func:`flowkit.experiment.schema.validate` after every section has been checked on its
own: stage names are unique, each stage reads only flows of earlier stages, the data, the
couplings and the evaluation sets build, and every stage resolves its inherited options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from flowkit.checks import did_you_mean, shown
from flowkit.conditions import LABEL_KEY, VECTOR_KEY
from flowkit.experiment.components import build_coupling, build_data, pick_device
from flowkit.experiment.rundir import directory_key
from flowkit.experiment.specs import Problems, join_key, registry, report
from flowkit.models.signature import ModelSignatureError, check_call_signature


@dataclass
class Parts:
    """What the stages' checks need: the built data and a small batch of it.

    Attributes:
        source, target: the data distributions.
        x: two source samples.
        cond: their conditions.
        memory: bytes of memory of the experiment's device.
    """

    source: Any
    target: Any
    x: Tensor
    cond: dict[str, Tensor]
    memory: int


CPU_CHECK_BYTES = 1 << 30


def device_memory(device: str) -> int:
    """Total memory (bytes) of ``device``: the GPU's, or the machine's RAM for the CPU."""
    target = pick_device(device)
    if target.type == "cuda":
        return torch.cuda.get_device_properties(target.index or 0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def dry_forward(spec: Any, parts: Parts, device: str) -> Tensor:
    """The output of a fresh model ``spec`` on the two-sample batch, on ``device``."""
    with torch.device(device):
        model = registry("models").build(spec)
        x = parts.x.to(device)
        return model(x, torch.zeros(x.shape[0]), **{k: v.to(device) for k, v in parts.cond.items()})


def check_model_fits(spec: Any, parts: Parts, key: str, problems: Problems) -> None:
    """Model ``spec`` must be callable as ``model(x, t, **cond)`` with the data's conditions,
    read the conditions the data give (:func:`check_model_conditions`), map a data batch to its
    own shape, and training it with Adam (weights, gradients and two moments in float32) must fit
    in the device's memory.

    The model is built and run on the meta device (shapes only, no memory); a model whose
    forward pass cannot run on meta tensors (it reads values, say) is run for real on the CPU
    when it is small (under :data:`CPU_CHECK_BYTES` of weights), and not shape-checked otherwise.
    """
    with torch.device("meta"):
        model = registry("models").build(spec)
    params = sum(p.numel() for p in model.parameters())
    try:
        check_call_signature(model, parts.cond, model_name(spec))
    except ModelSignatureError as err:
        problems.append((key, str(err)))
        return
    if not check_model_conditions(model, model_name(spec), parts, key, problems):
        return
    if 16 * params > parts.memory:
        problems.append(
            (
                key,
                f"has {params:,} parameters: about {16 * params / 2**30:.1f} GiB to train with "
                f"Adam, more than the {parts.memory / 2**30:.1f} GiB of the device",
            )
        )
        return
    try:
        try:
            out = dry_forward(spec, parts, "meta")
        except (NotImplementedError, RuntimeError) as err:
            if "meta" not in str(err) or 4 * params > CPU_CHECK_BYTES:
                raise
            out = dry_forward(spec, parts, "cpu")
    except Exception as err:  # any failure of the user's model is reported, with its message
        where = f"a forward pass on a batch of shape {tuple(parts.x.shape)} fails"
        problems.append((key, f"does not fit the data: {where}: {shown(str(err))}"))
        return
    if tuple(out.shape) != tuple(parts.x.shape):
        problems.append(
            (
                key,
                f"maps inputs of shape {tuple(parts.x.shape)} to {tuple(out.shape)}; a flow's "
                "model must return the shape of its input (check dim / channels)",
            )
        )


def model_name(spec: Any) -> str:
    """The name of model ``spec`` (for messages)."""
    return spec if isinstance(spec, str) else str(spec.get("name", "model"))


def check_model_conditions(
    model: Any, name: str, parts: Parts, key: str, problems: Problems
) -> bool:
    """A model that declares its conditions (``num_classes``, ``cond_dim``, as the built-in
    ones do) must read exactly the conditions the data give; False (with a problem) if not."""
    before = len(problems)
    for cond_key, option, size in (
        (LABEL_KEY, "num_classes", data_classes(parts)),
        (VECTOR_KEY, "cond_dim", data_cond_dim(parts)),
    ):
        if not hasattr(model, option):
            continue
        declared = getattr(model, option)
        if cond_key in parts.cond and declared is None:
            problems.append(
                (
                    key,
                    f"model {name!r} is unconditional, but the data (data.target) give the "
                    f"condition {cond_key!r}: set {join_key(key, option)}: {size or '...'} "
                    "(or use an unconditional target)",
                )
            )
        elif cond_key not in parts.cond and declared is not None:
            problems.append(
                (
                    join_key(key, option),
                    f"is {declared} (a conditional model), but the data give no condition "
                    f"{cond_key!r}: use a conditional target (e.g. data.target: "
                    f"{{name: digits, conditional: true}}) or remove {option}",
                )
            )
        elif size is not None and declared is not None and size > declared:
            problems.append(
                (join_key(key, option), f"is {declared}, but the data (data.target) have {size}")
            )
    return len(problems) == before


def data_classes(parts: Parts) -> int | None:
    """The number of classes of the data's labels (the target's ``num_classes``), if known."""
    size = getattr(parts.target, "num_classes", None)
    return size if isinstance(size, int) else None


def data_cond_dim(parts: Parts) -> int | None:
    """The size of the data's condition vectors ``c``, if they have any."""
    c = parts.cond.get(VECTOR_KEY)
    return int(c.shape[-1]) if isinstance(c, Tensor) and c.ndim == 2 else None


def check_reference(name: str, known: list[str], key: str, problems: Problems) -> None:
    """``name`` must be one of the ``known`` earlier flow stages."""
    if name in known:
        return
    if not known:
        problems.append((key, f"names {name!r}, but no flow stage comes before this stage"))
        return
    problems.append(
        (
            key,
            f"must name an earlier stage that produces a flow ({', '.join(known)}), got {name!r}."
            + did_you_mean(name, known),
        )
    )


@dataclass
class SpecView:
    """What a flow stage's ``flow_spec`` and ``init_conflict`` read of a run's context, known
    before the run: the experiment and the flow specs of the stages so far (None where a
    stage's spec could not be formed)."""

    experiment: Any
    specs: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def last_flow(self) -> str:
        return next(reversed(self.specs))


def check_init(stage: Any, view: SpecView, key: str, problems: Problems, formed: bool) -> None:
    """Record the spec of a flow stage (None unless ``formed``: its references are valid) and
    report an ``init`` that names a flow of another model, path or prediction (the run would
    otherwise stop there, or save mismatched weights)."""
    view.specs[stage.name] = spec = stage.flow_spec(view) if formed else None
    conflict = None if spec is None else stage.init_conflict(view)
    if conflict is not None:
        problems.append((join_key(key, "init"), conflict))


def build_parts(experiment: Any, problems: Problems) -> Parts | None:
    """The data, the top-level coupling and a batch of two sources, built once; None (with a
    problem) if they fail."""
    try:
        source, target = build_data(experiment.data)
    except (ValueError, TypeError, OSError) as err:
        report(problems, "data", err)
        return None
    try:
        coupling = build_coupling(experiment.coupling, source, target)
        x, cond = coupling.sample_source(2, generator=torch.Generator().manual_seed(0))
    except (ValueError, TypeError, OSError) as err:
        report(problems, "coupling", err)
        return None
    return Parts(source, target, x, cond, device_memory(experiment.device))


def check_pipeline(experiment: Any, problems: Problems) -> None:
    """Append the problems of the stage sequence and of everything built from the data."""
    parts = build_parts(experiment, problems)
    if parts is not None:
        check_model_fits(experiment.model, parts, "model", problems)
    flows: list[str] = []
    seen: set[str] = set()
    view = SpecView(experiment)
    for i, stage in enumerate(experiment.stages):
        key = join_key("stages", i)
        if directory_key(stage.name) in seen:  # Train and train share a directory on macOS
            problems.append((join_key(key, "name"), f"duplicate stage name {stage.name!r}"))
        seen.add(directory_key(stage.name))
        stage.resolve(experiment, parts, key, problems)
        before = len(problems)
        if stage.needs_flow and not flows:
            problems.append((key, f"a {stage.type} stage needs a flow stage before it"))
        else:
            for ref_key, name in stage.references(key):
                check_reference(name, flows, ref_key, problems)
        if stage.produces_flow:
            check_init(stage, view, key, problems, formed=len(problems) == before)
            flows.append(stage.name)
