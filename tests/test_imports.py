"""Module structure: no import cycles between the training entry point and the DDP trainer."""

from __future__ import annotations

import ast
import importlib
import inspect


def module_level_imports(module_name: str) -> set[str]:
    """Modules imported by top-level statements of ``module_name`` (not inside functions)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def all_imports(module_name: str) -> set[str]:
    """Modules imported anywhere in ``module_name``, functions included."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_api_and_ddp_trainer_do_not_import_each_other():
    assert "flowkit.training.ddp_trainer" not in module_level_imports("flowkit.training.api")
    assert not any(
        m.startswith("flowkit.training.api") for m in all_imports("flowkit.training.ddp_trainer")
    )


def test_generator_helpers_live_in_one_module():
    from flowkit.training import generators

    assert "flowkit.training.generators" in module_level_imports("flowkit.training.api")
    assert generators.make_generator.__module__ == "flowkit.training.generators"
    assert generators.rank_stream.__module__ == "flowkit.training.generators"
    assert "flowkit.training.api" not in all_imports("flowkit.training.generators")
    assert "flowkit.training.ddp_trainer" not in all_imports("flowkit.training.generators")
