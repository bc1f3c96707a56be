"""Contact sheets: the query image and its top results with scores, or groups of duplicates, in one picture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from .atomic import atomic_write
from .images import ImageError, fit_square, load_image
from .search import Hit

THUMB = 200
LABEL = 34


def contact_sheet(rows: Sequence[tuple[str | os.PathLike, Sequence[Hit]]], root: str | os.PathLike | None,
                  dest: str | os.PathLike, thumb: int = THUMB) -> Path:
    """Draw one row per query: the query, then each hit with its id and score. Returns ``dest``.

    Hits are looked up under ``root`` (the indexed folder); one that can no longer be read is drawn
    as a grey tile rather than failing the whole sheet.
    """
    cols = 1 + max((len(hits) for _, hits in rows), default=0)
    sheet = Image.new("RGB", (cols * thumb, len(rows) * (thumb + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (query, hits) in enumerate(rows):
        y = r * (thumb + LABEL)
        tiles = [(Path(query), f"query: {Path(query).name}")]
        tiles += [(Path(root) / h.id if root else Path(h.id), f"{h.score:.3f} {h.id}") for h in hits]
        for c, (path, label) in enumerate(tiles):
            _tile(sheet, draw, path, label, c * thumb, y, thumb)
        draw.line([(thumb - 1, y), (thumb - 1, y + thumb)], fill=(220, 0, 0), width=3)
    return _save(sheet, dest)


def group_sheet(groups: Sequence[tuple[float, Sequence[str]]], root: str | os.PathLike | None,
                dest: str | os.PathLike, thumb: int = THUMB) -> Path:
    """Draw one row per group of near-identical images (``(score, ids)``), the score on its first tile.

    Images are read under ``root``; one that cannot be read is drawn as a grey tile. Returns ``dest``.
    """
    cols = max((len(ids) for _, ids in groups), default=1)
    sheet = Image.new("RGB", (cols * thumb, max(1, len(groups)) * (thumb + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (score, ids) in enumerate(groups):
        y = r * (thumb + LABEL)
        for c, item in enumerate(ids):
            _tile(sheet, draw, Path(root) / item if root else Path(item),
                  (f"{score:.3f} " if c == 0 else "") + item, c * thumb, y, thumb)
    return _save(sheet, dest)


def _tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, path: Path, label: str, x: int, y: int, thumb: int) -> None:
    try:
        tile = fit_square(load_image(path, draft_size=thumb), thumb)
    except ImageError:
        tile = Image.new("RGB", (thumb, thumb), (200, 200, 200))
    sheet.paste(tile, (x, y))
    draw.text((x + 4, y + thumb + 4), _fit(draw, label, thumb - 8), fill="black")


def _save(sheet: Image.Image, dest: str | os.PathLike) -> Path:
    fmt = Image.registered_extensions().get(Path(dest).suffix.lower(), "JPEG")
    return atomic_write(dest, lambda fh: sheet.save(fh, fmt, quality=90))


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    while text and draw.textlength(text) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text
