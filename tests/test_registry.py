"""The generic Registry: registration, lookup, building from specs, errors and plugins."""

from __future__ import annotations

import importlib.metadata
import types
from collections import OrderedDict
from collections.abc import Sized

import numpy as np
import pytest
import torch
from PIL import Image

import flowkit.registry as registry_module
from flowkit.registry import REGISTRIES, Registry, RegistryError, RegistryTypeError


class Widget:
    """A widget for the tests.

    More text that is not part of the one-line description.
    """

    def __init__(self, size: int = 1, colour: str = "red") -> None:
        self.size = size
        self.colour = colour


@pytest.fixture
def reg() -> Registry:
    r: Registry = Registry("widget", base=Widget)
    r.register("widget")(Widget)

    @r.register("gadget", description="Makes gadgets.")
    def gadget(**options):
        widget = Widget()
        widget.options = options
        return widget

    return r


def test_names_and_descriptions(reg):
    assert reg.names() == ["gadget", "widget"]
    assert "widget" in reg and "nothing" not in reg
    assert reg.get("widget").description == "A widget for the tests."
    assert reg.get("gadget").description == "Makes gadgets."
    assert [e.name for e in reg.entries()] == ["gadget", "widget"]


def test_build_from_name_dict_and_instance(reg):
    assert isinstance(reg.build("widget"), Widget)
    w = reg.build({"name": "widget", "size": 3, "colour": "blue"})
    assert (w.size, w.colour) == (3, "blue")
    assert reg.build("widget", size=5).size == 5  # overrides
    assert reg.build(w) is w  # instances of the base pass through
    assert reg.build({"name": "gadget", "anything": [1, 2]}).options == {"anything": [1, 2]}


def test_unknown_name_lists_choices_and_closest_match(reg):
    with pytest.raises(RegistryError) as info:
        reg.build("widgit")
    message = str(info.value)
    assert "unknown widget 'widgit'" in message
    assert "gadget, widget" in message
    assert "Did you mean 'widget'?" in message
    with pytest.raises(ValueError, match="valid widget names"):  # RegistryError is a ValueError
        reg.get("zzz")


def test_unknown_option_names_allowed_options(reg):
    with pytest.raises(RegistryError) as info:
        reg.build({"name": "widget", "sise": 2})
    message = str(info.value)
    assert "'sise'" in message and "allowed options: size, colour" in message
    assert "Did you mean 'size'?" in message


def test_bad_specs(reg):
    with pytest.raises(RegistryError, match="has no 'name' key"):
        reg.build({"size": 2})
    with pytest.raises(RegistryTypeError, match="must be a name, a mapping or a Widget"):
        reg.build(3.5)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("widget")(Widget)
    with pytest.raises(RegistryError, match="non-empty string"):
        reg.add("", Widget)


def test_factory_building_the_wrong_type_raises(reg):
    reg.add("broken", lambda size=1: {"size": size}, "Builds a dict, not a Widget.")
    with pytest.raises(RegistryTypeError) as info:  # a RegistryError and a TypeError
        reg.build({"name": "broken", "size": 2})
    assert isinstance(info.value, TypeError) and isinstance(info.value, RegistryError)
    assert "widget 'broken' built a dict, not a Widget" in str(info.value)


def test_base_given_as_a_dotted_path_is_resolved_lazily():
    r: Registry = Registry("lazy", "collections:OrderedDict")
    assert r._base == "collections:OrderedDict"  # nothing imported at construction
    r.add("ordered", dict, "Builds a plain dict.")
    with pytest.raises(TypeError, match="lazy 'ordered' built a dict, not a OrderedDict"):
        r.build("ordered")
    assert r.base is OrderedDict


def test_accepts_lets_protocol_objects_through():
    r: Registry = Registry("sized thing", base=list, accepts=Sized)
    obj = (1, 2)
    assert r.build(obj) is obj
    with pytest.raises(RegistryError, match="must be a name, a mapping or a Sized, got float"):
        r.build(1.5)


def test_registry_without_base_passes_objects_through():
    r: Registry = Registry("thing")
    obj = object()
    assert r.build(obj) is obj


def test_named_registries_exist():
    expected = {
        "paths",
        "schedules",
        "solvers",
        "spacings",
        "couplings",
        "distributions",
        "models",
        "time_samplers",
        "metrics",
    }
    assert set(REGISTRIES) == expected


def test_every_named_registry_declares_its_base():
    from flowkit.couplings.base import Coupling, Sampleable
    from flowkit.data.base import Distribution
    from flowkit.metrics.base import Metric
    from flowkit.paths.affine import AffinePath
    from flowkit.paths.schedules.base import Schedule
    from flowkit.solvers.base import Solver
    from flowkit.solvers.spacing import Spacing
    from flowkit.training.time_samplers import TimeSampler

    bases = {key: reg.base for key, reg in REGISTRIES.items()}
    assert bases == {
        "paths": AffinePath,
        "schedules": Schedule,
        "solvers": Solver,
        "spacings": Spacing,
        "couplings": Coupling,
        "distributions": Distribution,
        "models": torch.nn.Module,
        "time_samplers": TimeSampler,
        "metrics": Metric,
    }
    assert REGISTRIES["distributions"].accepts is Sampleable
    assert REGISTRIES["time_samplers"].accepts is Sampleable


def test_every_registered_component_builds_its_base(tmp_path):
    """Every entry (with example options where it needs some) builds its registry's base."""
    pairs = {"x0": torch.zeros(4, 2), "x1": torch.ones(4, 2)}
    schedule = {"a": lambda t: t, "b": lambda t: 1 - t}
    np.save(tmp_path / "x.npy", np.zeros((4, 2), dtype=np.float32))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    options = {
        ("distributions", "tensor_file"): {"file": str(tmp_path / "x.npy")},
        ("distributions", "image_folder"): {"folder": str(tmp_path / "images"), "size": 8},
        ("paths", "custom"): schedule,
        ("schedules", "custom"): schedule,
        ("couplings", "paired"): pairs,
        ("couplings", "distillation"): {"pairs": {"name": "paired", **pairs}},
    }
    built = 0
    for key, reg in REGISTRIES.items():
        for entry in reg.entries():
            spec = {"name": entry.name, **options.get((key, entry.name), {})}
            assert isinstance(reg.build(spec), reg.base), (reg.kind, entry.name)
            built += 1
    assert built > 40  # every registry was populated and walked


class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint: ``load()`` runs ``loader``."""

    def __init__(self, loader):
        self.loader, self.loads = loader, 0

    def load(self):
        self.loads += 1
        return self.loader()


def test_plugins_register_through_entry_points(monkeypatch):
    target: Registry = Registry("plugin thing")

    def register_callable():
        target.add("from_callable", dict, "Registered by a callable entry point.")

    def import_module():  # what importing a plugin module does: its decorators run
        target.add("from_module", list, "Registered on import.")
        return types.ModuleType("fake_plugin")

    # a callable entry point is loaded then called; a module entry point is only imported
    points = [FakeEntryPoint(lambda: register_callable), FakeEntryPoint(import_module)]
    groups = []

    def entry_points(group):
        groups.append(group)
        return points

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    assert target.names() == ["from_callable", "from_module"]
    assert groups == ["flowkit.plugins"]
    assert target.build("from_callable") == {}
    target.names()  # loading is idempotent
    assert groups == ["flowkit.plugins"] and [p.loads for p in points] == [1, 1]
