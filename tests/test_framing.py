"""Object framing (jiansuo.framing): studio product shots are cropped to the object, real photos left whole."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jiansuo import framing as lv
from jiansuo.images import fit_square
from tests.conftest import real_photo


def _jpeg(img: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _product_shot(backdrop=(255, 255, 255), size=(800, 600), box=(300, 150, 500, 450), noise=2.0, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.broadcast_to(np.asarray(backdrop, np.float32), (size[1], size[0], 3)).copy()
    arr += rng.normal(0, noise, arr.shape)
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    arr[y0:y1, x0:x1] = np.stack([90 + 60 * np.sin(xx / 17.0), 40 + 30 * np.cos(yy / 11.0), 120 + 0 * xx], -1)
    return _jpeg(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


@pytest.mark.parametrize("backdrop", [(255, 255, 255), (232, 232, 230), (238, 226, 214)])
def test_frames_product_on_flat_backdrop(backdrop):
    img = _product_shot(backdrop)
    found = lv.object_box(img)
    assert found is not None
    (x0, y0, x1, y1), colour = found
    # the object is 300..500 x 150..450; the box holds it with a small margin
    assert 280 <= x0 <= 300 and 500 <= x1 <= 520 and 130 <= y0 <= 150 and 450 <= y1 <= 470
    assert max(abs(c - b) for c, b in zip(colour, backdrop)) <= 6


def test_frames_on_a_studio_gradient():
    arr = np.full((600, 800, 3), 240, np.float32) - np.linspace(0, 28, 600)[:, None, None]
    arr[200:400, 350:450] = (30, 60, 160)
    img = _jpeg(Image.fromarray(arr.astype(np.uint8)))
    (x0, y0, x1, y1), _ = lv.object_box(img)
    assert 320 <= x0 <= 350 and 450 <= x1 <= 480 and 170 <= y0 <= 200 and 400 <= y1 <= 430


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "camera"])
def test_leaves_real_photos_whole(name):
    assert lv.object_box(real_photo(name)) is None


def test_leaves_blank_dark_and_full_images_whole():
    assert lv.object_box(Image.new("RGB", (400, 300), (255, 255, 255))) is None          # nothing on it
    assert lv.object_box(_product_shot((20, 20, 24))) is None                              # dark backdrop
    assert lv.object_box(_product_shot(box=(2, 2, 798, 598))) is None                      # fills the canvas


def test_rotation_fill_is_neither_backdrop_nor_object():
    shot = _product_shot()
    rotated = _jpeg(shot.rotate(6, resample=Image.BICUBIC, fillcolor=(0, 0, 0)))
    assert lv.object_box(rotated, lv.Framing(fill_band=0.0)) is None     # without the fill rule: left whole
    (x0, y0, x1, y1), _ = lv.object_box(rotated)
    assert 250 <= x0 <= 310 and 490 <= x1 <= 550 and 100 <= y0 <= 160 and 440 <= y1 <= 500


@pytest.mark.parametrize("angle, fill", [(5, (0, 0, 0)), (-4, (0, 0, 0)), (6, (255, 255, 255))])
def test_rotation_fill_on_a_backdrop_darkening_to_a_corner(angle, fill):
    # A darker shade of the backdrop is also a blend of it with black: only the pure fill and the
    # rotated edge beside it may count as fill, or the dark half of the backdrop is taken for fill
    # and the copy is left whole while its original is framed.
    h, w = 600, 1000
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.asarray((130, 200, 235), np.float32) * (1.0 - 0.25 * (xx / w + yy / h))[..., None]
    arr[220:380, 420:580] = np.stack([200 + 40 * np.sin(xx[220:380, 420:580] / 9.0), 90 + 0 * xx[220:380, 420:580],
                                      40 + 30 * np.cos(yy[220:380, 420:580] / 7.0)], -1)
    shot = _jpeg(Image.fromarray(arr.clip(0, 255).astype(np.uint8)))
    (x0, y0, x1, y1), _ = lv.object_box(shot)
    assert 390 <= x0 <= 420 and 580 <= x1 <= 610 and 190 <= y0 <= 220 and 380 <= y1 <= 410
    (x0, y0, x1, y1), _ = lv.object_box(_jpeg(shot.rotate(angle, resample=Image.BICUBIC, fillcolor=fill)))
    assert 380 <= x0 <= 420 and 580 <= x1 <= 620 and 180 <= y0 <= 220 and 380 <= y1 <= 420


def test_framing_is_deterministic_and_fast():
    import time

    img = _product_shot()
    first = lv.object_box(img)
    t = time.perf_counter()
    for _ in range(20):
        assert lv.object_box(img) == first
    assert (time.perf_counter() - t) / 20 < 0.02    # a few tenths of a millisecond; generous for a busy CI


def test_frame_pads_with_the_backdrop_colour():
    img = _product_shot((232, 232, 230))
    crop, fill = lv.frame(img, lv.Framing())
    assert crop.size[0] < img.size[0] and max(abs(c - 231) for c in fill) <= 6
    square = fit_square(crop, 224, fill=fill)
    assert square.size == (224, 224)
    assert lv.frame(real_photo("coffee"), lv.Framing())[1] == (255, 255, 255)
