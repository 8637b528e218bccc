"""``image_folder``: a folder of images (Pillow) as finite data, class subfolders as labels.

Building the distribution lists the files and reads each image's header (size and mode, no
pixels), so missing folders, unreadable files and mixed sizes are reported by ``flowkit
validate``. Pixels are decoded when a batch needs them (in the trainer's worker processes with
``num_workers``), or once for all with ``cache: true``.
"""

from __future__ import annotations

import importlib
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowkit.data.finite import FiniteData, absolute_paths
from flowkit.registry import DISTRIBUTIONS

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ImageFolderError(ValueError):
    """A folder or image that cannot be used; the message names the file."""


def pil_image() -> Any:
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow comes with matplotlib
        raise ImportError("image_folder needs Pillow: pip install Pillow") from err
    return Image


def run_prepare(prepare: str, root: Path) -> None:
    """Call the function named ``"package.module:function"`` with ``root`` to write the folder."""
    module, _, attr = str(prepare).partition(":")
    try:
        function = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ImageFolderError(
            f"prepare: cannot import {prepare!r} (expected 'package.module:function'): {err}"
        ) from err
    function(root)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def list_images(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The image files under ``root`` (sorted), their class indices and the class names.

    Either ``root`` holds the images (no labels), or one subfolder per class holding its
    images (classes numbered in the sorted order of their names).
    """
    if not root.is_dir():
        raise ImageFolderError(f"folder: {root} is not a folder" if root.exists()
                               else f"folder: not found: {root}")
    entries = sorted(root.iterdir())
    files = [p for p in entries if is_image(p)]
    classes = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    classes = [c for c in classes if any(is_image(p) for p in c.iterdir())]
    if files and classes:
        raise ImageFolderError(f"folder: {root} holds both images and class folders "
                               f"({classes[0].name}/); put every image in a class folder, or none")
    if files:
        return files, None, []
    if not classes:
        raise ImageFolderError(f"folder: {root} holds no images ({', '.join(EXTENSIONS)}), "
                               "directly or in class folders")
    paths, labels = [], []
    for label, folder in enumerate(classes):
        for p in sorted(folder.iterdir()):
            if is_image(p):
                paths.append(p)
                labels.append(label)
    return paths, labels, [c.name for c in classes]


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image's header; an unreadable file raises naming it."""
    try:
        with pil_image().open(path) as image:
            return image.size
    except (OSError, ValueError) as err:
        raise ImageFolderError(f"cannot read image {path}: {err}") from err


def fit_to(image: Any, size: tuple[int, int], crop: bool) -> Any:
    """Resize ``image`` to ``size = (height, width)``: with ``crop``, scale the shorter side to
    fit then cut the centre (no distortion); without, stretch to the size."""
    height, width = size
    if not crop:
        return image.resize((width, height), pil_image().Resampling.BICUBIC)
    w, h = image.size
    scale = max(width / w, height / h)
    scaled = (max(width, round(w * scale)), max(height, round(h * scale)))
    if scaled != (w, h):
        image = image.resize(scaled, pil_image().Resampling.BICUBIC)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def to_unit_range(pixels: np.ndarray) -> Tensor:
    """8-bit pixels ``(H, W, C)`` → a float tensor ``(C, H, W)`` in [−1, 1]: ``v / 127.5 − 1``."""
    chw = np.array(pixels.transpose(2, 0, 1), order="C")  # a writable copy (mapped pages are not)
    return torch.from_numpy(chw).float() / 127.5 - 1


@DISTRIBUTIONS.register("image_folder")
class ImageFolder(FiniteData):
    """A folder of images as (channels, height, width) tensors in [-1, 1]; class folders → y.

    Args:
        folder: the folder (in YAML, relative to the YAML file): images directly in it, or one
            subfolder per class (labels ``cond["y"]`` numbered in sorted folder-name order).
        size: ``[height, width]`` (or one integer for square images) to bring every image to;
            None: all images must already have one size.
        channels: 1 (grey), 3 (RGB) or 4 (RGBA).
        crop: scale the shorter side to the size and cut the centre (true) or stretch (false).
        cache: decode every image once when the data is built (memory: N·C·H·W floats).
        prepare: ``"package.module:function"`` called as ``function(folder)`` to write the folder
            when it does not exist yet (e.g. ``flowkit.data.sample_photos:write_patches``).
        labels: return the class folders' labels as ``cond["y"]`` (false: ignore them).

    Example:
        >>> import flowkit as fk, tempfile, os
        >>> folder = os.path.join(tempfile.mkdtemp(), "patches")
        >>> prepare = "flowkit.data.sample_photos:write_patches"
        >>> data = fk.data.build({"name": "image_folder", "folder": folder, "prepare": prepare})
        >>> data.classes, data.event_shape
        (['china', 'flower'], (3, 32, 32))
    """

    resolve_paths = partial(absolute_paths, names=("folder",))

    def __init__(
        self,
        folder: str | os.PathLike,
        size: int | list[int] | None = None,
        channels: int = 3,
        crop: bool = True,
        cache: bool = False,
        prepare: str | None = None,
        labels: bool = True,
    ) -> None:
        root = Path(folder).expanduser()
        if prepare is not None and not root.exists():
            run_prepare(prepare, root)
        if channels not in MODES:
            raise ImageFolderError(f"channels must be one of 1, 3, 4; got {channels!r}")
        self.files, classes, self.classes = list_images(root)
        sizes = {p: image_size(p) for p in self.files}
        if size is None:
            first = self.files[0]
            odd = next((p for p in self.files if sizes[p] != sizes[first]), None)
            if odd is not None:
                raise ImageFolderError(
                    "mixed image sizes: {} is {}×{}, {} is {}×{}; set size to resize and crop "
                    "them to one size".format(first, *sizes[first], odd, *sizes[odd])
                )
            self.size = sizes[first][::-1]
        else:
            pair = [size, size] if isinstance(size, int) else list(size)
            if len(pair) != 2 or not all(isinstance(d, int) and d > 0 for d in pair):
                raise ImageFolderError(f"size must be a positive integer or [height, width]; "
                                       f"got {size!r}")
            self.size = tuple(pair)
        self.channels, self.crop = channels, crop
        self.cached: Tensor | None = None
        classes = classes if labels else None
        super().__init__(len(self.files), (channels, *self.size), classes, False, str(root))
        if cache:
            self.cached = self.decode(torch.arange(len(self.files)))

    def load(self, path: Path) -> Tensor:
        """One image, converted, resized and scaled to [−1, 1]."""
        try:
            with pil_image().open(path) as image:
                image = image.convert(MODES[self.channels])
                if image.size != self.size[::-1]:
                    image = fit_to(image, self.size, self.crop)
                pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, ValueError) as err:
            raise ImageFolderError(f"cannot read image {path}: {err}") from err
        return to_unit_range(pixels.reshape(*self.size, self.channels))

    def decode(self, index: Tensor) -> Tensor:
        return torch.stack([self.load(self.files[i]) for i in index.tolist()])

    def read_rows(self, index: Tensor) -> Tensor:
        return self.decode(index) if self.cached is None else self.cached[index]
