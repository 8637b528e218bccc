"""Your own data: tensor files, image folders, tensors and datasets as finite distributions."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import flowkit as fk
from flowkit.data.arrays import ArrayFileError
from flowkit.data.image_folder import ImageFolderError
from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.schema import validate

ROWS = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
LABELS = np.arange(20) % 4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def write_formats(directory: Path) -> dict[str, dict]:
    """The same rows and labels in every supported format; spec options by file name."""
    from safetensors.torch import save_file

    np.save(directory / "x.npy", ROWS)
    np.save(directory / "y.npy", LABELS)
    np.savez(directory / "x.npz", x=ROWS, y=LABELS)
    torch.save({"x": torch.from_numpy(ROWS), "y": torch.from_numpy(LABELS)}, directory / "x.pt")
    save_file({"x": torch.from_numpy(ROWS), "y": torch.from_numpy(LABELS)},
              str(directory / "x.safetensors"))
    return {
        "x.npy": {"labels": str(directory / "y.npy")},
        "x.npz": {"key": "x", "labels": "y"},
        "x.pt": {"key": "x", "labels": "y"},
        "x.safetensors": {"key": "x", "labels": "y"},
    }


def test_every_format_reads_the_same_rows_and_labels(tmp_path: Path) -> None:
    for name, options in write_formats(tmp_path).items():
        data = fk.data.build({"name": "tensor_file", "file": str(tmp_path / name), **options})
        assert data.event_shape == (3,) and len(data) == 20 and data.num_classes == 4
        assert torch.equal(data.read_rows(torch.arange(20)), torch.from_numpy(ROWS)), name
        x, cond = data.sample_conditional(20, gen())  # one whole epoch
        order = data.sampler.order
        assert torch.equal(x, torch.from_numpy(ROWS)[order])
        assert torch.equal(cond["y"], torch.from_numpy(LABELS)[order])


def test_epochs_are_without_replacement_and_batches_run_across_epochs() -> None:
    data = fk.data.from_tensor(torch.arange(10.0)[:, None])
    g = gen(3)
    seen = torch.cat([data.sample(4, g) for _ in range(5)])[:, 0]  # 20 rows: two epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])  # a fresh order per epoch
    assert data.state_dict()["position"] == 20 and data.sampler.epoch == 2


def test_position_is_a_pure_function_of_the_seed() -> None:
    """Restoring (seed, position) continues the stream; the seed alone fixes every batch."""
    x = torch.randn(7, 2)
    a, b = fk.data.from_tensor(x), fk.data.from_tensor(x)
    g = gen(1)
    a.sample(5, g)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(9, None), b.sample(9, gen(99)))  # the generator is not used


def test_standardisation_round_trip_and_statistics(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).normal(3.0, 5.0, size=(5000, 2)).astype(np.float64)
    rows[:, 1] = 7.0  # a constant feature maps to 0 and back
    np.save(tmp_path / "s.npy", rows)
    data = fk.data.build({"name": "tensor_file", "file": str(tmp_path / "s.npy"),
                          "standardize": True})
    z = data.sample(5000, gen())
    assert abs(float(z[:, 0].mean())) < 1e-5 and abs(float(z[:, 0].std()) - 1) < 1e-3
    assert torch.all(z[:, 1] == 0)
    back = data.to_data(z).double()
    assert torch.allclose(back.sort(0).values, torch.from_numpy(rows).sort(0).values, atol=1e-4)
    stats = fk.data.Standardization.from_state(json.loads(json.dumps(data.stats.state_dict())))
    assert torch.allclose(stats.mean, data.stats.mean)


def test_shape_option_reshapes_rows(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros((5, 12), np.float32))
    data = fk.data.build({"name": "tensor_file", "file": str(tmp_path / "flat.npy"),
                          "shape": [3, 2, 2]})
    assert data.sample(2, gen()).shape == (2, 3, 2, 2)
    with pytest.raises(ArrayFileError, match=r"shape: \[5, 2\] does not fit rows of shape \(12,\)"):
        fk.data.build({"name": "tensor_file", "file": str(tmp_path / "flat.npy"), "shape": [5, 2]})


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (None, {}, r"file: file not found: .*missing\.npy"),
        (lambda p: np.save(p / "v.npy", np.zeros(5)), {}, r"shape \(5,\); expected \(N, \.\.\.\)"),
        (lambda p: np.savez(p / "m.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2))), {},
         r"holds 2 arrays \(a, b\); name one with key"),
        (lambda p: np.savez(p / "k.npz", a=np.zeros((2, 2))), {"key": "z"},
         r"has no array 'z'; it holds: a"),
        (lambda p: np.save(p / "l.npy", np.zeros((4, 2))), {"labels": "y"},
         r"a \.npy data file has no keys"),
        (lambda p: (np.save(p / "n.npy", np.zeros((4, 2))), np.save(p / "ny.npy", np.arange(3))),
         {"labels": "ny.npy"}, r"labels: 3 labels for 4 rows of .*n\.npy"),
        (lambda p: (np.save(p / "f.npy", np.zeros((4, 2))), np.save(p / "fy.npy", np.ones(4))),
         {"labels": "fy.npy"}, r"labels must be integers"),
        (lambda p: (p / "t.txt").write_text("1 2"), {}, r"suffix '\.txt'; supported: \.npy"),
        (lambda p: (p / "bad.npy").write_bytes(b"not an array"), {}, r"cannot read .*bad\.npy"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, make, options: dict, message: str) -> None:
    before = set(tmp_path.iterdir())
    if make is not None:
        make(tmp_path)
    made = sorted(set(tmp_path.iterdir()) - before, key=lambda p: len(p.name))
    file = made[0] if made else tmp_path / "missing.npy"
    if "labels" in options and options["labels"].endswith(".npy"):
        options = {**options, "labels": str(tmp_path / options["labels"])}
    with pytest.raises((ArrayFileError, ValueError, TypeError), match=message):
        fk.data.build({"name": "tensor_file", "file": str(file), **options})


def test_building_reads_only_the_header(tmp_path: Path) -> None:
    """A header announcing 10^9 rows with no data behind it builds (validate stays cheap);
    reading a row is what fails."""
    path = tmp_path / "huge.npy"
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 4)}
        )
    data = fk.data.build({"name": "tensor_file", "file": str(path)})
    assert len(data) == 10**9 and data.event_shape == (4,)
    with pytest.raises(ValueError):
        data.read_rows(torch.tensor([0]))


def test_safetensors_header_and_bfloat16(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    x = torch.randn(6, 4)
    save_file({"x": x.bfloat16()}, str(tmp_path / "b.safetensors"))
    data = fk.data.build({"name": "tensor_file", "file": str(tmp_path / "b.safetensors")})
    assert torch.equal(data.read_rows(torch.arange(6)), x.bfloat16())
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ArrayFileError, match="not a safetensors file"):
        fk.data.build({"name": "tensor_file", "file": str(tmp_path / "junk.safetensors")})


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    for name, (w, h) in sizes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)


def test_image_folder_classes_sizes_channels_and_range(tmp_path: Path) -> None:
    write_images(tmp_path, {"cat/a.png": (8, 6), "cat/b.png": (8, 6), "dog/c.png": (8, 6)})
    data = fk.data.build({"name": "image_folder", "folder": str(tmp_path)})
    assert data.event_shape == (3, 6, 8) and data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1] and data.num_classes == 2
    x, cond = data.sample_conditional(3, gen())
    assert x.min() >= -1 and x.max() <= 1
    pixels = np.array(Image.open(data.files[int(data.sampler.order[0])]))
    assert torch.allclose(x[0], torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1)
    assert cond["y"].tolist() == data.labels[data.sampler.order].tolist()
    grey = fk.data.build({"name": "image_folder", "folder": str(tmp_path), "channels": 1,
                          "size": 4, "labels": False})
    y, cond = grey.sample_conditional(2, gen())
    assert y.shape == (2, 1, 4, 4) and cond == {}
    wide = fk.data.build({"name": "image_folder", "folder": str(tmp_path), "size": [6, 4],
                          "crop": False, "cache": True})
    assert wide.sample(3, gen()).shape == (3, 3, 6, 4)


def test_image_folder_errors_name_the_file(tmp_path: Path) -> None:
    write_images(tmp_path / "mixed", {"a.png": (8, 8), "b.png": (9, 8)})
    with pytest.raises(ImageFolderError, match=r"mixed image sizes: .*a\.png is 8×8, .*b\.png is "
                                               r"9×8; set size"):
        fk.data.build({"name": "image_folder", "folder": str(tmp_path / "mixed")})
    assert len(fk.data.build({"name": "image_folder", "folder": str(tmp_path / "mixed"),
                              "size": 8})) == 2
    write_images(tmp_path / "broken", {"a.png": (4, 4)})
    (tmp_path / "broken" / "z.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageFolderError, match=r"cannot read image .*z\.png"):
        fk.data.build({"name": "image_folder", "folder": str(tmp_path / "broken")})
    with pytest.raises(ImageFolderError, match="folder: not found"):
        fk.data.build({"name": "image_folder", "folder": str(tmp_path / "nowhere")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="holds no images"):
        fk.data.build({"name": "image_folder", "folder": str(tmp_path / "empty")})
    write_images(tmp_path / "both", {"a.png": (4, 4), "k/b.png": (4, 4)})
    with pytest.raises(ImageFolderError, match="both images and class folders"):
        fk.data.build({"name": "image_folder", "folder": str(tmp_path / "both")})


def test_image_folder_prepare_writes_the_photo_patches(tmp_path: Path) -> None:
    folder = tmp_path / "patches"
    data = fk.data.build({"name": "image_folder", "folder": str(folder),
                          "prepare": "flowkit.data.sample_photos:write_patches"})
    assert data.classes == ["china", "flower"] and data.event_shape == (3, 32, 32)
    assert len(data) == 572
    with pytest.raises(ImageFolderError, match=r"prepare: cannot import 'no\.such:thing'"):
        fk.data.build({"name": "image_folder", "folder": str(tmp_path / "x"),
                       "prepare": "no.such:thing"})


def test_from_dataset_reads_items_and_labels() -> None:
    x = torch.randn(10, 2)
    ds = torch.utils.data.TensorDataset(x, torch.arange(10) % 3)
    data = fk.data.from_dataset(ds)
    batch, cond = data.sample_conditional(10, gen())
    assert torch.equal(batch, x[data.sampler.order])
    assert torch.equal(cond["y"], (torch.arange(10) % 3)[data.sampler.order])
    assert fk.data.from_dataset([torch.zeros(2)] * 3).sample(2, gen()).shape == (2, 2)
    with pytest.raises(TypeError, match="map-style dataset"):
        fk.data.from_dataset(iter([]))


def test_from_tensor_checks_its_input() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, \.\.\.\).*x\[:, None\]"):
        fk.data.from_tensor(torch.zeros(5))
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        fk.data.from_tensor(torch.zeros(5, 2), labels=torch.zeros(4, dtype=torch.long))


def test_yaml_paths_are_relative_to_the_yaml_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "exp").mkdir()
    np.save(tmp_path / "exp" / "x.npy", ROWS[:, :2])
    np.save(tmp_path / "exp" / "y.npy", LABELS)
    (tmp_path / "exp" / "run.yaml").write_text(
        "extends: default\n"
        "data: {target: {name: tensor_file, file: x.npy, labels: y.npy}}\n"
        "model: {name: mlp, dim: 2, num_classes: 4}\n"
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path / "exp" / "run.yaml")
    assert config["data"]["target"]["file"] == str(tmp_path / "exp" / "x.npy")
    assert config["data"]["target"]["labels"] == str(tmp_path / "exp" / "y.npy")
    (tmp_path / "exp" / "bad.yaml").write_text(
        "data: {target: {name: tensor_file, file: nothere.npy}}\n"
        "model: {name: mlp, dim: 2}\nstages: [{type: train}]\n"
    )
    with pytest.raises(ConfigError, match=r"data\.target.*file not found: .*exp/nothere\.npy"):
        validate(load_config(tmp_path / "exp" / "bad.yaml"))


def test_standardisation_statistics_are_stored_in_the_run(tmp_path: Path) -> None:
    """The run keeps the statistics it trained with: samples come back in data units even
    after the data file changed."""
    from flowkit.experiment.runner import load_run, sample_run

    rows = np.random.default_rng(2).normal(10.0, 3.0, size=(400, 2))
    np.save(tmp_path / "d.npy", rows)
    config = {
        "name": "std", "seed": 0,
        "data": {"target": {"name": "tensor_file", "file": str(tmp_path / "d.npy"),
                            "standardize": True}},
        "model": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 1},
        "training": {"steps": 40, "batch_size": 64, "lr": 1e-2},
        "evaluation": {"n_samples": 64, "solvers": [{"name": "euler", "steps": 4}],
                       "metrics": ["w2"]},
        "plots": {"n_points": 64, "trajectories": 4, "trajectory_steps": 4, "nfe": [4]},
        "stages": [{"type": "train"}],
    }
    result = fk.run(config, out=tmp_path / "runs", quiet=True)
    stored = json.loads((Path(result.run_dir) / "data_statistics.json").read_text())
    assert np.allclose(stored["target"]["mean"], rows.mean(0))
    assert np.allclose(stored["target"]["std"], rows.std(0))
    np.save(tmp_path / "d.npy", rows * 100)  # the file changes after training
    ctx = load_run(result.run_dir)
    assert torch.allclose(ctx.target.stats.mean, torch.from_numpy(rows.mean(0)))
    samples = sample_run(result.run_dir, n=2000, solver="euler", steps=8)
    assert abs(float(samples.mean()) - 10.0) < 1.5 and 1.0 < float(samples.std()) < 6.0
