"""Reading product photos: one place that turns a file into a clean RGB image or a clear error.

Every caller (indexing, search, the site) goes through :func:`load_image`, so a corrupt,
truncated, empty or oversized file is rejected the same way everywhere.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from PIL import Image, ImageFile, ImageOps

from . import config

# Extensions we index. Matching is case-insensitive (".JPG" and ".Jpeg" are common in shops' exports).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)


# A truncated file must fail loudly, never be half-decoded into a grey image that gets indexed.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """A file that cannot be used as an image; ``str(err)`` says why in plain words."""


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension we index (any letter case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_image_files(root: str | os.PathLike) -> Iterator[Path]:
    """Yield every image file under ``root`` recursively, in a stable (sorted) order.

    Hidden files and folders (names starting with '.') are skipped: they are editor and OS
    droppings, never catalogue photos.
    """
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and is_image_path(name):
                yield Path(dirpath) / name


def load_image(
    source: str | os.PathLike | bytes | BinaryIO,
    *,
    draft_size: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode ``source`` (a path, bytes or a binary file object) into an RGB :class:`PIL.Image.Image`.

    - EXIF orientation is applied, so a phone photo stands the right way up;
    - transparency is composited on white (product shots are cut out on white);
    - CMYK, 16-bit, palette and grey images are converted to 8-bit RGB;
    - animated GIF/WebP give their first frame;
    - with ``draft_size``, a JPEG is decoded directly at a reduced scale (at least that many pixels
      on each side), which is several times faster than decoding full size and resizing.

    Raises :class:`ImageError` for an empty, truncated, non-image or oversized (more than
    ``max_pixels``, default :func:`jiansuo.config.max_pixels`: product photos are rarely above 30 MP, and
    anything far above is more likely a decompression bomb than a photo) input.
    """
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("empty file")
        fp: BinaryIO | str = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            if os.path.getsize(source) == 0:
                raise ImageError("empty file")
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from exc
        fp = os.fspath(source)
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning is replaced by our explicit, configurable limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError("image has no pixels")
            max_pixels = max_pixels or config.max_pixels()
            if width * height > max_pixels:
                raise ImageError(
                    f"image too large: {width}x{height} = {width * height:,} pixels "
                    f"(limit {max_pixels:,}; possible decompression bomb)"
                )
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large (possible decompression bomb): {exc}") from exc
    except (Image.UnidentifiedImageError, SyntaxError) as exc:
        raise ImageError("not an image file (format not recognised)") from exc
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg or "image file is truncated" in msg or "broken data stream" in msg:
            raise ImageError(f"truncated or corrupt image data ({msg})") from exc
        raise ImageError(f"cannot decode image ({msg})") from exc
    except (ValueError, TypeError, EOFError, MemoryError) as exc:
        raise ImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        # Palette images may carry transparency in info["transparency"]; RGBA keeps it.
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clipping everything to white.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype("uint8"), "L")
    if img.mode == "F":
        img = img.convert("L")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


@dataclass(frozen=True)
class Box:
    """A part of a photo, in fractions of its width and height: (x0, y0) top left, (x1, y1) bottom right."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError("a box needs four numbers")
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError("box coordinates are fractions of the photo's width and height, from 0 to 1")
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError("a box needs x0 < x1 and y0 < y1 (top left, then bottom right)")

    @classmethod
    def parse(cls, text: str) -> "Box":
        """A box from ``"x0,y0,x1,y1"``; ValueError saying what is wrong with it otherwise."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4:
            raise ValueError(f"a box is four numbers x0,y0,x1,y1 (fractions from 0 to 1), not {text!r}")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"a box is four numbers x0,y0,x1,y1 (fractions from 0 to 1), not {text!r}") from None
        return cls(*values)

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` × ``height`` image (at least one pixel each way)."""
        left, top = int(self.x0 * width), int(self.y0 * height)
        right = max(left + 1, min(width, round(self.x1 * width)))
        bottom = max(top + 1, min(height, round(self.y1 * height)))
        return left, top, right, bottom

    def crop(self, img: Image.Image) -> Image.Image:
        """That part of ``img``."""
        return img.crop(self.pixels(*img.size))

    def __str__(self) -> str:
        return ",".join(f"{v:.4g}" for v in (self.x0, self.y0, self.x1, self.y1))


def fit_square(img: Image.Image, size: int, *, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Resize ``img`` to fit a ``size``×``size`` square, keeping its aspect ratio, padding with ``fill``.

    Product photos are usually one object on white: padding keeps the whole product (a centre
    crop would cut sleeves and hems) without distorting its shape.
    """
    width, height = img.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = img.resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0)
    if (new_w, new_h) == (size, size):
        return resized
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas
