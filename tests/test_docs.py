"""The documentation: the YAML reference is generated from the schema, the CLI page covers every
option, and the site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.cli import build_parser
from flowkit.experiment.reference import generate

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_reference_is_generated_from_the_schema() -> None:
    page = (ROOT / "docs" / "yaml.md").read_text()
    assert page == generate(), (
        "docs/yaml.md is stale: run `python -m flowkit.experiment.reference > docs/yaml.md`"
    )


def test_yaml_reference_lists_every_stage_type_and_section() -> None:
    page = generate()
    for heading in (
        "## training",
        "## evaluation",
        "## plots",
        "### stages: reflow",
        "### stages: distill",
        "### stages: evaluate",
    ):
        assert f"\n{heading}\n" in page


def test_cli_page_covers_every_command_and_option() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for name, command in sub.choices.items():
        assert f"## flowkit {name}" in page
        for action in command._actions:
            for option in action.option_strings:
                assert option in page, f"docs/cli.md lacks {option} of flowkit {name}"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mkdocs") is None, reason="mkdocs is not installed")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "yaml" / "index.html").is_file()
