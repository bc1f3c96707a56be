"""Calibrates the site's similarity thresholds (JIANSUO_MIN_SIMILARITY, JIANSUO_VERY_SIMILAR) on real photos.

    .venv/bin/python bench/similarity.py               # about a minute on 2 cores; rewrites its RESULTS.md section
    .venv/bin/python bench/similarity.py --no-write    # print only

Rerun it whenever the model or its preprocessing changes, and copy the two thresholds it prints into
``JIANSUO_CALIBRATED_MIN_SIMILARITY`` and ``JIANSUO_CALIBRATED_VERY_SIMILAR`` in jiansuo/web/settings.py
(the one place the defaults live).

Every photo takes the site's own path: encoded as the site stores it (a product photo, or a query
photo shrunk to 640 px), JPEG-decoded as the site decodes it, embedded by the site's model. The
cosine similarity of query and catalogue photo is what a search scores.

- **Catalogue**: Fashion-MNIST training photos rendered as product shots (``jiansuo.demo.product_photo``:
  upscaled to 256x256, tinted, on white), ``--per-class`` of each of the 10 classes, plus scikit-image's
  bundled real photos (cat, coffee, rocket, astronaut, ...).
- **Queries**: (1) lightly edited copies of catalogue photos (cropped, recompressed, brighter or darker,
  tilted, and for Fashion-MNIST "re-shot": the same item drawn again at another size and place, a
  slightly different tint, on an off-white background; for scikit-image, the right view of its stereo
  motorcycle pair against the left one, a real second photograph); (2) Fashion-MNIST *test* photos,
  products that are not in the catalogue; (3) the real photos, against the Fashion-MNIST catalogue.
- **Pairs** (every query against every catalogue photo, the query's original aside where it has one):
  *same product* (a query and the photo it was made from), *same category* (another product of the
  query's Fashion-MNIST class), *other category* (another class), *unrelated* (a real photo against a
  product shot, or two different real photos).

Thresholds: ``min`` is the cosine that best separates same product/same category (shown) from other
category/unrelated (hidden), by F1 over every pair; ``very`` the one that best separates same product
from the rest, likewise. Both are rounded to 0.01.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jiansuo.datasets import fashion_mnist  # noqa: E402
from jiansuo.demo import _COLOURS, IMAGE_SIZE, product_photo  # noqa: E402
from jiansuo.web.catalog.photos import MAX_SIDE, QUERY_MAX_SIDE, encode_jpeg  # noqa: E402  (no Django needed)
from results_md import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)

SETTINGS = ROOT / "jiansuo" / "web" / "settings.py"
# The real photos bundled in scikit-image's wheel (tests/conftest.py's list), and its stereo pair.
REAL_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "retina", "colorwheel", "camera", "coins", "clock", "moon"]
EDITS = ["cropped", "recompressed", "lighting", "tilted"]
KINDS = ["same product", "same category", "other category", "unrelated"]


# --------------------------------------------------------------------------- photos


def real_photo(name: str) -> Image.Image:
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")


def edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A lightly edited copy of ``img``: what a shopper's screenshot or re-upload of it looks like."""
    w, h = img.size
    if kind == "cropped":
        l, t, r, b = (rng.uniform(0.04, 0.12, 4) * [w, h, w, h]).astype(int)
        return img.crop((l, t, w - r, h - b)).resize((int(w * 0.7), int(h * 0.7)), Image.LANCZOS)
    if kind == "recompressed":
        buf = io.BytesIO()
        img.resize((w // 2, h // 2), Image.BILINEAR).save(buf, "JPEG", quality=int(rng.integers(35, 55)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "lighting":
        img = ImageEnhance.Brightness(img).enhance(rng.choice([0.8, 1.2]) * rng.uniform(0.95, 1.05))
        return ImageEnhance.Contrast(img).enhance(rng.uniform(0.85, 1.15))
    if kind == "tilted":
        corner = tuple(int(v) for v in np.asarray(img)[:4, :4].reshape(-1, 3).mean(0))
        return img.rotate(float(rng.choice([-1, 1]) * rng.uniform(3, 7)), Image.BICUBIC, fillcolor=corner)
    raise ValueError(kind)


def reshot(gray28: np.ndarray, colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """The same Fashion-MNIST item "photographed again": another size and place in the frame, a
    slightly different tint, an off-white background, a little blur."""
    shot = product_photo(gray28, tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in colour))
    item = shot.crop((16, 16, IMAGE_SIZE - 16, IMAGE_SIZE - 16))
    side = int(rng.integers(170, 236))
    item = item.resize((side, side), Image.BICUBIC)
    bg = tuple(int(v) for v in rng.integers(236, 250, 3))
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), bg)
    arr = np.asarray(item, dtype=np.float32)
    white = (arr.min(axis=2, keepdims=True) > 250)  # the old background, made the new one
    arr = np.where(white, np.asarray(bg, np.float32), arr).astype(np.uint8)
    x, y = (int(v) for v in rng.integers(0, IMAGE_SIZE - side + 1, 2))
    canvas.paste(Image.fromarray(arr), (x, y))
    return canvas.filter(ImageFilter.GaussianBlur(0.6))


def as_site_sees(img: Image.Image, extractor, max_side: int):
    """``img`` stored the site's way (re-encoded JPEG) and decoded as the site decodes it for the model."""
    from jiansuo.pipeline import decode_for

    return decode_for(extractor, encode_jpeg(img, max_side))


@dataclass
class Photo:
    image: Image.Image
    label: int | None   # Fashion-MNIST class; None for a real photo
    origin: str         # what it shows: "fm-train-123", "real-coffee", ...
    how: str = ""       # for a query: how it was made


def build(per_class: int, queries_per_class: int, seed: int) -> tuple[list[Photo], list[Photo]]:
    rng = np.random.default_rng(seed)
    train, train_labels = fashion_mnist.load("train")
    test, test_labels = fashion_mnist.load("test")
    catalogue: list[Photo] = []
    queries: list[Photo] = []
    for c in range(10):
        picks = rng.choice(np.flatnonzero(train_labels == c), per_class, replace=False)
        colours = [_COLOURS[i][2] for i in rng.integers(len(_COLOURS), size=per_class)]
        for n, (idx, colour) in enumerate(zip(picks, colours)):
            photo = product_photo(train[idx], colour)
            catalogue.append(Photo(photo, c, f"fm-train-{idx}"))
            if n < queries_per_class:  # an edited copy of this catalogue product
                how = (EDITS + ["re-shot"])[n % (len(EDITS) + 1)]
                image = reshot(train[idx], colour, rng) if how == "re-shot" else edit(photo, how, rng)
                queries.append(Photo(image, c, f"fm-train-{idx}", how))
        for idx in rng.choice(np.flatnonzero(test_labels == c), queries_per_class, replace=False):
            colour = _COLOURS[rng.integers(len(_COLOURS))][2]
            queries.append(Photo(product_photo(test[idx], colour), c, f"fm-test-{idx}", "new product"))
    for name in REAL_PHOTOS:
        catalogue.append(Photo(real_photo(name), None, f"real-{name}"))
        for how in EDITS:
            queries.append(Photo(edit(real_photo(name), how, rng), None, f"real-{name}", how))
    from skimage import data

    left, right = data.stereo_motorcycle()[:2]
    catalogue.append(Photo(Image.fromarray(left).convert("RGB"), None, "real-motorcycle"))
    queries.append(Photo(Image.fromarray(right).convert("RGB"), None, "real-motorcycle", "re-shot"))
    return catalogue, queries


def embed(extractor, photos: list[Photo], max_side: int, batch: int = 32) -> np.ndarray:
    out = []
    for start in range(0, len(photos), batch):
        images = [as_site_sees(p.image, extractor, max_side) for p in photos[start:start + batch]]
        out.append(extractor.embed_images(images, batch_size=batch))
    return np.concatenate(out)


# --------------------------------------------------------------------------- pairs and thresholds


def pairs(catalogue: list[Photo], queries: list[Photo], sims: np.ndarray) -> dict[str, np.ndarray]:
    """Cosines by kind of pair, plus "same product, <how>" for each way a copy was made."""
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    by_how: dict[str, list[float]] = {}
    cat_labels = np.array([-1 if p.label is None else p.label for p in catalogue])
    cat_real = cat_labels < 0
    for qi, q in enumerate(queries):
        row = sims[qi]
        same = np.array([p.origin == q.origin for p in catalogue])
        if same.any():
            out["same product"] += row[same].tolist()
            by_how.setdefault(q.how, []).extend(row[same].tolist())
        rest = ~same
        if q.label is None:  # a real photo: everything else is unrelated to it
            out["unrelated"] += row[rest].tolist()
        else:
            out["same category"] += row[rest & (cat_labels == q.label)].tolist()
            out["other category"] += row[rest & ~cat_real & (cat_labels != q.label)].tolist()
            out["unrelated"] += row[rest & cat_real].tolist()
    result = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    for how, values in by_how.items():
        result[f"same product, {how}"] = np.asarray(values, dtype=np.float64)
    return result


def confused_classes(catalogue: list[Photo], queries: list[Photo], sims: np.ndarray, t: float,
                     top: int = 4) -> list[tuple[str, float]]:
    """The pairs of Fashion-MNIST classes that make up most other-category pairs at or above ``t``."""
    cat_labels = np.array([-1 if p.label is None else p.label for p in catalogue])
    counts: dict[tuple[int, int], int] = {}
    for qi, q in enumerate(queries):
        if q.label is None:
            continue
        hit = (sims[qi] >= t) & (cat_labels >= 0) & (cat_labels != q.label)
        for c in cat_labels[hit]:
            key = tuple(sorted((q.label, int(c))))
            counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values()) or 1
    names = fashion_mnist.CLASS_NAMES
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return [(f"{names[a]}–{names[b]}", n / total) for (a, b), n in ranked]


def best_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float, float, float]:
    """(threshold, precision, recall, F1) of the cosine, on a 0.01 grid, that maximises F1 of "score >= t"."""
    best = (0.0, 0.0, 0.0, -1.0)
    for t in np.round(np.arange(0.0, 1.0001, 0.01), 2):
        p, r = precision_recall(pos, neg, t)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best[3] + 1e-12:
            best = (float(t), p, r, f1)
    return best


def precision_recall(pos: np.ndarray, neg: np.ndarray, t: float) -> tuple[float, float]:
    tp, fp = int((pos >= t).sum()), int((neg >= t).sum())
    return (tp / (tp + fp) if tp + fp else 1.0), tp / len(pos)


def current_defaults() -> dict[str, str]:
    """The defaults settings.py has now (so a rerun shows whether they need changing)."""
    text = SETTINGS.read_text()
    found = {}
    for name in ("JIANSUO_MIN_SIMILARITY", "JIANSUO_VERY_SIMILAR"):
        m = re.search(rf"^JIANSUO_CALIBRATED_{name[8:]} = ([0-9.]+)", text, re.MULTILINE)
        found[name] = m.group(1) if m else "?"
    return found


# --------------------------------------------------------------------------- report


def report(dist: dict[str, np.ndarray], lo: tuple, hi: tuple, args, extractor, seconds: float,
           counts: tuple[int, int], confused: list[tuple[str, float]]) -> str:
    t_min, t_very = lo[0], hi[0]
    load = os.getloadavg()[0]
    rows = ["| pairs | n | min | 5% | 25% | median | 75% | 95% | max | ≥ min | ≥ very |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in dist.items():
        q = np.percentile(v, [0, 5, 25, 50, 75, 95, 100])
        label = name if not name.startswith("same product, ") else "&nbsp;&nbsp;" + name.split(", ", 1)[1]
        rows.append(f"| {label} | {len(v)} | " + " | ".join(f"{x:.3f}" for x in q)
                    + f" | {(v >= t_min).mean():.0%} | {(v >= t_very).mean():.0%} |")
    shown = np.concatenate([dist["same product"], dist["same category"]])
    hidden = np.concatenate([dist["other category"], dist["unrelated"]])
    rest = np.concatenate([dist["same category"], hidden])
    cur = current_defaults()
    lines = [
        "## Similarity thresholds of the site (`bench/similarity.py`)",
        "",
        f"Command: `.venv/bin/python bench/similarity.py --per-class {args.per_class} --queries-per-class "
        f"{args.queries_per_class} --seed {args.seed}` ({time.strftime('%Y-%m-%d %H:%M')}, {extractor.name} "
        f"v{extractor.version}, {platform.python_version()}, {os.cpu_count()} cores, load average {load:.1f}; "
        f"{counts[0]} catalogue and {counts[1]} query photos embedded in {seconds:.0f} s).",
        "",
        "Cosine similarity between a query photo and a catalogue photo, both stored, decoded and embedded "
        "the site's way. Catalogue: Fashion-MNIST training photos rendered as product shots "
        f"(`jiansuo.demo.product_photo`, {args.per_class} per class) and scikit-image's {len(REAL_PHOTOS) + 1} "
        "bundled real photos. Queries: edited copies of catalogue photos (same product), Fashion-MNIST test "
        "photos (new products: same or other category), and the real photos (unrelated to the product "
        "shots, and to each other). The re-shot Fashion-MNIST items are redrawn, not photographed; the "
        "motorcycle is a real second photograph (scikit-image's stereo pair).",
        "",
        *rows,
        "",
        f"- **JIANSUO_MIN_SIMILARITY = {t_min:.2f}** (shown: same product or same category; hidden: other "
        f"category or unrelated): precision {lo[1]:.3f}, recall {lo[2]:.3f}, F1 {lo[3]:.3f}; "
        f"{(dist['unrelated'] >= t_min).mean():.1%} of unrelated and "
        f"{(dist['other category'] >= t_min).mean():.1%} of other-category pairs pass it, "
        f"{(dist['same product'] >= t_min).mean():.1%} of same-product pairs do. The other-category pairs "
        "that pass are mostly look-alike classes: "
        + ", ".join(f"{name} {share:.0%}" for name, share in confused) + ".",
        f"- **JIANSUO_VERY_SIMILAR = {t_very:.2f}** (\"very similar\": same product; \"similar\" below): "
        f"precision {hi[1]:.3f}, recall {hi[2]:.3f}, F1 {hi[3]:.3f}.",
        f"- Over all pairs: {len(shown)} should be shown, {len(hidden)} hidden; {(rest >= t_very).sum()} "
        "pairs that are not the same product reach \"very similar\" ("
        + ", ".join(f"{(dist[k] >= t_very).sum()} {k}" for k in KINDS[1:]) + ").",
        f"- Defaults in jiansuo/web/settings.py when this ran: JIANSUO_MIN_SIMILARITY "
        f"{cur['JIANSUO_MIN_SIMILARITY']}, JIANSUO_VERY_SIMILAR {cur['JIANSUO_VERY_SIMILAR']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=60, help="catalogue products per Fashion-MNIST class (60)")
    p.add_argument("--queries-per-class", type=int, default=30,
                   help="edited copies and new products per class used as queries (30 each)")
    p.add_argument("--model", default=os.environ.get("JIANSUO_MODEL", "efficientnet-lite0"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = p.parse_args()
    if not fashion_mnist.available():
        sys.exit("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist")
    from jiansuo.features import cached_extractor

    extractor = cached_extractor(args.model)
    catalogue, queries = build(args.per_class, min(args.queries_per_class, args.per_class), args.seed)
    start = time.perf_counter()
    cat_vecs = embed(extractor, catalogue, MAX_SIDE)
    query_vecs = embed(extractor, queries, QUERY_MAX_SIDE)
    seconds = time.perf_counter() - start
    sims = query_vecs @ cat_vecs.T
    dist = pairs(catalogue, queries, sims)
    lo = best_threshold(np.concatenate([dist["same product"], dist["same category"]]),
                        np.concatenate([dist["other category"], dist["unrelated"]]))
    hi = best_threshold(dist["same product"],
                        np.concatenate([dist["same category"], dist["other category"], dist["unrelated"]]))
    text = report(dist, lo, hi, args, extractor, seconds, (len(catalogue), len(queries)),
                  confused_classes(catalogue, queries, sims, lo[0]))
    print(text)
    if not args.no_write:
        write_section("similarity", text)
        print("written to bench/RESULTS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
