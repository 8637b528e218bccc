"""Patches of scikit-learn's two sample photographs, written once into an image folder.

``examples/photo_patches.yaml`` trains on them: ``image_folder`` calls :func:`write_patches`
through its ``prepare`` option when the folder does not exist yet. Also a command:
``python -m flowkit.data.sample_photos DIR``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def patch_grid(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners ``(row, column)`` of the ``size × size`` patches, ``stride`` apart."""
    return [
        (top, left)
        for top in range(0, height - size + 1, stride)
        for left in range(0, width - size + 1, stride)
    ]


def write_patches(
    folder: str | os.PathLike, size: int = 32, scale: float = 0.25, stride: int = 6
) -> Path:
    """Cut ``size × size`` RGB patches from the photographs shipped with scikit-learn
    (``load_sample_images``: ``china.jpg``, ``flower.jpg``), shrunk by ``scale`` first, and save
    them as PNG files in one class folder per photograph (``folder/china``, ``folder/flower``).

    The folder is written next to its final place and renamed into it, so a reader never sees a
    half-written folder and two processes preparing it at once do not mix their files.

    Returns:
        ``folder``.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = Path(folder)
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    photos = load_sample_images()
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for pixels, filename in zip(photos.images, photos.filenames, strict=True):
            photo = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
            shrunk = photo.resize(
                (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS
            )
            name = Path(filename).stem
            (staging / name).mkdir()
            for i, (top, left) in enumerate(patch_grid(shrunk.height, shrunk.width, size, stride)):
                patch = shrunk.crop((left, top, left + size, top + size))
                patch.save(staging / name / f"{i:05d}.png")
        try:
            staging.rename(folder)
        except OSError:  # prepared meanwhile by another process
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


if __name__ == "__main__":  # pragma: no cover
    print(write_patches(sys.argv[1] if len(sys.argv) > 1 else "photo_patches"))
