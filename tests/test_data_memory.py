"""A ``tensor_file`` larger than the memory a process may allocate trains without loading it.

The child process limits its data segment (``RLIMIT_DATA``: heap and private anonymous
mappings) to what it already uses plus 128 MiB, checks that loading the 512 MiB file whole is
refused, and trains on it: the memory-mapped file is read row by row. ``RLIMIT_AS`` would not
do: it counts the file mapping itself as address space.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROWS, DIM = 2_097_152, 64  # 512 MiB of float32
HEADROOM = 128 * 2**20

CHILD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np, torch, flowkit as fk

    def data_segment():
        for line in open("/proc/self/status"):
            if line.startswith("VmData"):
                return int(line.split()[1]) * 1024

    def train(target, steps):
        torch.manual_seed(0)
        model = fk.models.build({"name": "mlp", "dim": 64, "hidden": 64, "depth": 2})
        source = {"name": "gaussian", "dim": 64}
        coupling = {"name": "independent", "source": source, "target": target}
        return fk.train(fk.Flow(model, "rectified"), coupling, steps=steps, batch_size=256,
                        seed=0, progress=False, num_workers=int(sys.argv[3]))

    train(fk.data.from_tensor(torch.randn(300, 64)), 2)  # import what training needs first
    limit = data_segment() + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        np.load(sys.argv[1])
        print("loaded whole")
    except MemoryError:
        print("whole load refused")
    data = fk.data.build({"name": "tensor_file", "file": sys.argv[1]})
    history = train(data, 40)
    print("trained", len(history.losses), data.state_dict()["position"])
    """
)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(ROWS, DIM))
    chunk = 262_144
    for start in range(0, ROWS, chunk):
        array[start : start + chunk] = np.random.default_rng(start).normal(size=(chunk, DIM))
    array.flush()
    del array
    return path


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc: Linux")
@pytest.mark.parametrize("workers", [0, 1])
def test_npy_larger_than_the_memory_limit_trains(big_file: Path, workers: int) -> None:
    assert big_file.stat().st_size >= 4 * HEADROOM
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(big_file), str(HEADROOM), str(workers)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "whole load refused"
    assert lines[1] == f"trained 40 {40 * 256}"
