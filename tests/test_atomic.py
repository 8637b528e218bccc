"""flowkit.atomic: a write either replaces the file completely or leaves it as it was."""

from __future__ import annotations

import os

import pytest

from flowkit import atomic
from flowkit.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_successful_write_replaces_the_file(tmp_path):
    target = tmp_path / "latest"
    atomic_write_text(target, "old")
    assert atomic_write_text(target, "new") == target
    assert target.read_text() == "new"
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "latest"]


def test_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")

    def half_then_fail(tmp):
        tmp.write_text("partial")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_failing_fsync_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "latest"
    atomic_write_bytes(target, b"step_00000010")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"step_00000020")
    assert target.read_bytes() == b"step_00000010"
    assert os.listdir(tmp_path) == ["latest"]


def test_failed_first_write_leaves_no_file(tmp_path):
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "x.txt", lambda tmp: 1 / 0)
    assert os.listdir(tmp_path) == []


def test_temporary_file_keeps_the_suffix_and_directory(tmp_path):
    seen = []
    atomic_write(tmp_path / "plot.png", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"png")))
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".plot.")
    assert not tmp.exists()
