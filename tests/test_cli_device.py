"""`flowkit run|validate --device D`: the experiment's top-level `device`, from the command line."""

from __future__ import annotations

import pytest

from flowkit.cli import build_parser, main


def test_device_is_the_device_override_and_comes_after_set() -> None:
    args = build_parser().parse_args(["run", "--device", "auto", "--set", "seed=1"])
    assert args.overrides == ["device=auto", "seed=1"]
    args = build_parser().parse_args(["validate", "--set", "device=mps", "--device", "cpu"])
    assert args.overrides == ["device=mps", "device=cpu"]  # the last one wins


def test_validate_checks_the_device(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "--set", "device=gpu", "--device", "cpu"]) == 0
    assert main(["validate", "--device", "gpu"]) == 2
    assert "device: must be cpu, auto, mps, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
