"""Auto-box: shopper photos of catalogue products on real backgrounds, searched whole, with a hand-drawn
box and with the suggested box (``jiansuo search --auto-box``, API ``box=auto``).

    .venv/bin/python bench/auto_box.py            # ~3 min on 2 cores
    .venv/bin/python bench/auto_box.py --quick

The catalogue: product shots (Fashion-MNIST items tinted and Open Clip Art objects, each on a studio
backdrop, as bench/quality_sets.py renders them) and the real photos and wallpapers of the quality
benchmark (a scene that is the product). Queries, three kinds:

- **shopper**: a catalogue product, rendered anew, pasted at 25–55% of the longer side, anywhere,
  on a real photo or wallpaper (half of the real photos are catalogue scenes, the other half the
  rooms shoppers photograph in; the room is cropped, maybe mirrored and re-coloured); the hand-drawn box is the pasted object's rectangle plus 5%;
- **framed**: a catalogue product re-listed on another backdrop (auto-box must change nothing);
- **scene**: a catalogue scene resized and recompressed (auto-box must change nothing).

Top-1 is the shipped search's first result (exact cosine; the ranking's first result is the plain
nearest neighbour). The goal: auto-box ≥ 90% of the hand box on shopper photos, no loss on the others.
None of the packages kept for the independent evaluation is used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_sets as qs  # noqa: E402
from results_md import write_section  # noqa: E402

from jiansuo.autobox import suggest_box  # noqa: E402
from jiansuo.datasets import fashion_mnist  # noqa: E402
from jiansuo.features import get_extractor  # noqa: E402
from jiansuo.images import Box  # noqa: E402
from jiansuo.pipeline import embed_query  # noqa: E402


def _jpeg(img: Image.Image, quality: int = 88) -> Image.Image:
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def build(n_products: int, n_shopper: int, n_framed: int):
    """(catalogue images, queries as (kind, image, target, hand box or None))."""
    images, _ = fashion_mnist.load("test")
    idx = qs._rng("autobox-fm").permutation(len(images))[: n_products // 2]
    cuts = [qs.fmnist_cutout(images[i], qs.fmnist_colour(qs._rng("autobox-colour", i))) for i in idx]
    cuts += [c for _, c in qs.clipart_cutouts(n_products - len(cuts), "autobox")]
    catalogue = []
    for n, cut in enumerate(cuts):
        rng = qs._rng("autobox-db", n)
        catalogue.append(_jpeg(qs.render(cut, rng, size=qs.canvas_size(rng))))
    photos = [img for _, img in qs.real_photos()]
    # Every other real photo is a catalogue scene; the rest are the rooms shoppers photograph in.
    scenes, rooms = photos[::2], photos[1::2]
    first_scene = len(catalogue)
    catalogue += [_jpeg(s) for s in scenes]
    queries = []
    for q in range(n_shopper):
        rng = qs._rng("autobox-shopper", q)
        target = int(rng.integers(len(cuts)))
        bg = rooms[int(rng.integers(len(rooms)))]
        # A different view of the scene: a crop, maybe mirrored, re-coloured, at shopper-photo size.
        w, h = bg.size
        cw, ch = int(w * rng.uniform(0.5, 0.8)), int(h * rng.uniform(0.5, 0.8))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        bg = bg.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            bg = ImageOps.mirror(bg)
        long = int(rng.integers(640, 1025))
        s = long / max(bg.size)
        bg = bg.resize((max(64, round(bg.width * s)), max(64, round(bg.height * s))), Image.LANCZOS)
        arr = np.asarray(bg, dtype=np.float32) * (1 + rng.uniform(-0.1, 0.1, 3))
        bg = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
        obj = cuts[target]
        f = rng.uniform(0.25, 0.55)
        scale = f * max(bg.size) / max(obj.size)
        scale = min(scale, 0.95 * bg.width / obj.width, 0.95 * bg.height / obj.height)
        ow, oh = max(8, round(obj.width * scale)), max(8, round(obj.height * scale))
        obj = obj.resize((ow, oh), Image.LANCZOS)
        px, py = int(rng.integers(0, bg.width - ow + 1)), int(rng.integers(0, bg.height - oh + 1))
        bg.paste(obj, (px, py), mask=obj.getchannel("A"))
        m = 0.05 * max(ow, oh)
        hand = Box(max(0.0, (px - m) / bg.width), max(0.0, (py - m) / bg.height),
                   min(1.0, (px + ow + m) / bg.width), min(1.0, (py + oh + m) / bg.height))
        queries.append(("shopper", _jpeg(bg, int(rng.integers(70, 90))), target, hand))
    for q in range(n_framed):
        rng = qs._rng("autobox-framed", q)
        target = int(rng.integers(len(cuts)))
        queries.append(("framed", _jpeg(qs.render(cuts[target], rng, size=qs.canvas_size(rng))), target, None))
    for n, s in enumerate(scenes):
        rng = qs._rng("autobox-scene", n)
        small = s.resize((max(64, s.width * 2 // 3), max(64, s.height * 2 // 3)), Image.LANCZOS)
        queries.append(("scene", _jpeg(small, int(rng.integers(70, 90))), first_scene + n, None))
    return catalogue, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    n_products, n_shopper, n_framed = (200, 80, 40) if args.quick else (600, 300, 150)
    t0 = time.perf_counter()
    catalogue, queries = build(n_products, n_shopper, n_framed)
    ex = get_extractor()
    db = np.stack([embed_query(ex, im) for im in catalogue])
    rows: dict[str, dict[str, list[bool]]] = {}
    suggest_ms, boxed = [], 0
    for kind, img, target, hand in queries:
        r = rows.setdefault(kind, {"whole": [], "hand": [], "auto": []})
        r["whole"].append(int(np.argmax(db @ embed_query(ex, img))) == target)
        if hand is not None:
            r["hand"].append(int(np.argmax(db @ embed_query(ex, img, hand))) == target)
        t = time.perf_counter()
        box = suggest_box(ex, img, lambda v: (v @ db.T).max(axis=1))
        suggest_ms.append((time.perf_counter() - t) * 1e3)
        boxed += box is not None
        r["auto"].append(int(np.argmax(db @ embed_query(ex, img, box))) == target)
    lines = ["| queries | n | whole photo | hand-drawn box | auto-box | auto / hand |", "|---|---|---|---|---|---|"]
    for kind, r in rows.items():
        whole, auto = np.mean(r["whole"]), np.mean(r["auto"])
        hand = f"{np.mean(r['hand']):.3f}" if r["hand"] else "–"
        ratio = f"{auto / np.mean(r['hand']):.1%}" if r["hand"] and np.mean(r["hand"]) else "–"
        lines.append(f"| {kind} | {len(r['whole'])} | {whole:.3f} | {hand} | {auto:.3f} | {ratio} |")
    body = "\n".join([
        "## Auto-box: shopper photos on real backgrounds (bench/auto_box.py)",
        "",
        f"Catalogue: {len(catalogue)} images ({n_products} product shots, the rest "
        "real photos and wallpapers); top-1 of the shipped search. Goal: auto-box ≥ 90% of the hand box on "
        "shopper photos, no loss on framed products and scenes.",
        "",
        *lines,
        "",
        f"Suggesting a box (about 60 windows embedded and scored): median "
        f"{np.median(suggest_ms):.1f} ms; a box was suggested for {boxed} of {len(queries)} queries. "
        f"Model {ex.name} ({ex.precision}); {time.perf_counter() - t0:.0f} s in all.",
    ])
    print(body)
    if not args.no_write and not args.quick:
        write_section("auto_box", body)


if __name__ == "__main__":
    main()
