"""Decoding: every supported format becomes clean RGB; every broken input becomes a clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jiansuo.images import ImageError, fit_square, is_image_path, iter_image_files, load_image
from tests.conftest import real_photo


@pytest.fixture(scope="module")
def photo():
    return real_photo("coffee")


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"),
                                     ("TIFF", ".tif"), ("GIF", ".gif")])
def test_formats_decode_to_rgb(tmp_path, photo, fmt, ext):
    path = tmp_path / f"x{ext.upper()}"
    photo.save(path, format=fmt)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == photo.size
    # colours survive (GIF is palettised, so allow more error there)
    err = np.abs(np.asarray(img, dtype=int) - np.asarray(photo, dtype=int)).mean()
    assert err < (40 if fmt == "GIF" else 8)


def test_extension_case_and_walk(tmp_path, photo):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ["A.JPG", "b.Png", "c.jpeg", "notes.txt", ".x.jpg"]:
        (tmp_path / "a" / name).write_bytes(b"x")
    (tmp_path / "a" / ".hidden" / "d.jpg").write_bytes(b"x")
    found = [p.name for p in iter_image_files(tmp_path)]
    assert found == ["A.JPG", "b.Png", "c.jpeg"]
    assert is_image_path("X.TIFF") and not is_image_path("x.txt")


def test_transparency_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 255, 255))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    img = load_image(buf.getvalue())
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((5, 5)) == (0, 0, 255)


def test_palette_with_transparency_and_grey_and_cmyk(photo):
    pal = photo.convert("P")
    pal.info["transparency"] = 0
    for src in [pal, photo.convert("L"), photo.convert("CMYK")]:
        buf = io.BytesIO()
        src.save(buf, "PNG" if src.mode != "CMYK" else "JPEG")
        img = load_image(buf.getvalue())
        assert img.mode == "RGB" and img.size == photo.size


def test_16bit_png_scaled_not_clipped():
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    img = np.asarray(load_image(buf.getvalue()))
    assert img.shape == (64, 64, 3)
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255 and 100 < img[32, 32, 0] < 160


def test_exif_orientation_applied(photo):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    photo.save(buf, "JPEG", exif=exif)
    img = load_image(buf.getvalue())
    assert img.size == (photo.height, photo.width)


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert load_image(buf.getvalue()).getpixel((1, 1))[0] > 200


def test_draft_decodes_large_jpeg_at_reduced_size(photo):
    buf = io.BytesIO()
    photo.resize((1600, 1066)).save(buf, "JPEG")
    img = load_image(buf.getvalue(), draft_size=224)
    assert 224 <= min(img.size) < 1066


def _huge_png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_bad_inputs_raise_clear_errors(tmp_path, photo):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("this is not an image")
    full = io.BytesIO()
    photo.save(full, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_huge_png_header(60000, 60000))
    expected = {empty: "empty", text: "not an image", truncated: "truncated", bomb: "too large"}
    for path, words in expected.items():
        with pytest.raises(ImageError, match=words):
            load_image(path)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")


def test_pixel_limit_is_configurable(photo):
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    with pytest.raises(ImageError, match="too large"):
        load_image(buf.getvalue(), max_pixels=1000)


def test_fit_square_keeps_aspect_and_pads_white(photo):
    sq = fit_square(photo, 224)
    assert sq.size == (224, 224)
    assert sq.getpixel((112, 0)) == (255, 255, 255)  # coffee is landscape: padded top and bottom
    assert sq.getpixel((112, 112)) != (255, 255, 255)
