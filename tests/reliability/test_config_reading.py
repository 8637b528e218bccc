"""Malformed experiment files are ConfigErrors naming the file, never crashes or echoes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.yamlio import MAX_BYTES, MAX_DEPTH

LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "name: *i\n"
)
DEEP = "a: " + "[" * 3000 + "]" * 3000 + "\n"


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


CASES = {
    "billion laughs": (LAUGHS, "aliases are expanded"),
    "deep nesting": (DEEP, f"deeper than {MAX_DEPTH}"),
    "duplicate key": ("name: a\nseed: 1\nname: b\n", "duplicate key 'name' (line 3)"),
    "nested duplicate key": ("training:\n  lr: 1\n  lr: 2\n", "duplicate key 'lr' (line 3)"),
    "not UTF-8": (b"name: \xff\xfe\n", "not UTF-8"),
    "too large": ("#" * (MAX_BYTES + 1), "limited to"),
    "extends a device": ("extends: /dev/zero\n", "not a regular file"),
    "extends a directory": ("extends: /etc/\n", "not a regular file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_is_a_config_error(tmp_path: Path, case: str) -> None:
    text, phrase = CASES[case]
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert phrase in str(info.value)
    assert len(str(info.value)) < 1000  # nothing is echoed whole


def test_a_file_of_another_format_is_not_echoed(tmp_path: Path) -> None:
    secret = "root:x:0:0:root:/root:/bin/bash\n" * 200
    base = write(tmp_path / "passwd.yaml", secret)
    path = write(tmp_path / "bad.yaml", f"extends: {base}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value)) < 400, str(info.value)


def test_deep_nesting_in_an_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=f"deeper than {MAX_DEPTH}"):
        load_config(None, ["training.lr=" + "[" * 3000 + "]" * 3000])


def test_anchors_and_aliases_of_normal_size_still_work(tmp_path: Path) -> None:
    text = "extends: default\ntraining: &t {steps: 5}\nstages: [{type: train, training: *t}]\n"
    config = load_config(write(tmp_path / "y.yaml", text))
    assert config["stages"][0]["training"] == {"steps": 5}


@pytest.mark.parametrize(
    "case", ["billion laughs", "deep nesting", "not UTF-8", "extends a device"]
)
def test_cli_reports_malformed_files_without_traceback(tmp_path: Path, case: str) -> None:
    path = write(tmp_path / "bad.yaml", CASES[case][0])
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    named = "/dev/zero" if case == "extends a device" else str(path)
    assert named in proc.stderr + proc.stdout
