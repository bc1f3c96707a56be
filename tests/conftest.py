"""Shared fixtures: real photos from scikit-image written as catalogue files, and the real default model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Distinct real photos bundled in scikit-image's wheel (no download needed).
PHOTO_NAMES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "retina", "colorwheel", "camera", "coins", "clock", "moon"]


def real_photo(name: str) -> Image.Image:
    """A scikit-image sample photo as an RGB PIL image."""
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")


@pytest.fixture(scope="session")
def photo_images() -> dict[str, Image.Image]:
    """name -> RGB image for every photo in PHOTO_NAMES."""
    return {n: real_photo(n) for n in PHOTO_NAMES}


@pytest.fixture
def catalog(tmp_path: Path, photo_images) -> Path:
    """A catalogue folder of real photos in several formats and sub-folders."""
    root = tmp_path / "photos"
    (root / "women" / "tops").mkdir(parents=True)
    (root / "misc").mkdir()
    formats = [".jpg", ".png", ".webp", ".JPG", ".bmp", ".tiff"]
    for n, (name, img) in enumerate(photo_images.items()):
        folder = root / ("women/tops" if n % 3 == 0 else "misc" if n % 3 == 1 else "")
        ext = formats[n % len(formats)]
        img.save(folder / f"{name}{ext}", quality=92) if ext.lower() in (".jpg", ".webp") else img.save(folder / f"{name}{ext}")
    return root


@pytest.fixture(scope="session")
def extractor():
    """The real default extractor (EfficientNet-Lite0 on ONNX Runtime), built once per test session."""
    from jiansuo.features import get_extractor

    return get_extractor()
