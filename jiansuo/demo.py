"""The demo: a shop site over a generated catalogue, ready in a minute or two.

``python -m jiansuo.demo`` builds a catalogue from Fashion-MNIST (Debian's
``dataset-fashion-mnist``): each 28×28 photo is upscaled to 256×256 and tinted, and gets a
generated title, price and shop. It imports that catalogue into the site (which indexes it),
creates a demo account, and serves the site on 127.0.0.1 with the production server
(``python -m jiansuo.web serve``: gunicorn), printing the URL and the login.
Everything lives under ``--data-dir`` (``./demo-data``); a rerun reuses what is there.

This module imports Django only inside :func:`main`, through the site package.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from . import config
from .atomic import atomic_write
from .datasets import fashion_mnist

DEMO_USER = "demo"
DEMO_PASSWORD = "jiansuo-demo"
IMAGE_SIZE = 256
SEED = 20240601

# (English noun, Chinese noun, price range in CNY) per Fashion-MNIST class.
_CLASSES = [
    ("T-shirt", "T恤", (39, 199)), ("trousers", "长裤", (89, 399)), ("pullover", "套头衫", (129, 499)),
    ("dress", "连衣裙", (159, 899)), ("coat", "大衣", (299, 1999)), ("sandals", "凉鞋", (59, 299)),
    ("shirt", "衬衫", (79, 299)), ("sneakers", "运动鞋", (199, 1299)), ("bag", "包", (99, 1599)),
    ("ankle boots", "短靴", (259, 1499)),
]
_CATEGORIES = ["T-shirts · T恤", "Trousers · 长裤", "Pullovers · 套头衫", "Dresses · 连衣裙", "Coats · 大衣",
               "Sandals · 凉鞋", "Shirts · 衬衫", "Sneakers · 运动鞋", "Bags · 包", "Ankle boots · 短靴"]
# (English, Chinese, RGB)
_COLOURS = [
    ("Navy", "藏青色", (31, 58, 110)), ("Crimson", "绯红色", (170, 30, 45)), ("Olive", "橄榄绿", (96, 108, 40)),
    ("Charcoal", "炭灰色", (60, 62, 66)), ("Camel", "驼色", (176, 128, 72)), ("Teal", "青色", (20, 120, 120)),
    ("Burgundy", "酒红色", (110, 24, 48)), ("Mustard", "芥末黄", (200, 160, 40)), ("Ivory", "象牙白", (215, 205, 180)),
    ("Plum", "梅紫色", (100, 50, 110)), ("Sky blue", "天蓝色", (80, 150, 210)), ("Black", "黑色", (25, 25, 28)),
]
_STYLES = [("Classic", "经典"), ("Everyday", "日常"), ("Slim", "修身"), ("Relaxed", "宽松"), ("Vintage", "复古"),
           ("Urban", "都市"), ("Light", "轻盈"), ("Premium", "精选")]
_SHOPS = ["Beichen Apparel 北辰服饰", "Xilin Outfitters 西林户外", "Harbor Shoes 港湾鞋业", "Moonlight 月光精品",
          "Jade Street 玉街", "Cloud Knit 云织", "Red Lantern 红灯笼", "Pine & Stone 松石"]


def product_photo(gray28: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """A 28×28 Fashion-MNIST image (bright item on black) as a tinted product shot on white."""
    big = Image.fromarray(gray28, "L").resize((IMAGE_SIZE - 32, IMAGE_SIZE - 32), Image.BICUBIC)
    v = np.asarray(big, dtype=np.float32) / 255.0
    alpha = np.clip(v * 3.0, 0.0, 1.0)[..., None]          # where the item is (soft edges)
    shade = (0.45 + 0.75 * v)[..., None]                     # the item's texture, as light and dark
    rgb = np.asarray(colour, dtype=np.float32)[None, None, :] * shade
    out = (1.0 - alpha) * 255.0 + alpha * np.clip(rgb, 0, 255)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    canvas.paste(Image.fromarray(out.astype(np.uint8), "RGB"), (16, 16))
    return canvas


def build_catalogue(folder: Path, items: int, *, seed: int = SEED) -> Path:
    """Write ``items`` photos and a JSON Lines catalogue under ``folder``; returns the catalogue file.

    Deterministic for a given seed, and photos already on disk are not written again.
    """
    images, labels = fashion_mnist.load("train")
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(labels))[:items]
    photo_dir = folder / "photos"
    photo_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for idx in picks:
        label = int(labels[idx])
        noun_en, noun_zh, (lo, hi) = _CLASSES[label]
        c_en, c_zh, rgb = _COLOURS[rng.integers(len(_COLOURS))]
        s_en, s_zh = _STYLES[rng.integers(len(_STYLES))]
        price = float(rng.integers(lo, hi + 1)) + (0.9 if rng.random() < 0.5 else 0.0)
        item_id = f"FM-{idx:05d}"
        photo = photo_dir / f"{item_id}.jpg"
        if not photo.exists():
            product_photo(images[idx], rgb).save(photo, "JPEG", quality=92)
        rows.append({
            "item_id": item_id,
            "title": f"{s_en} {c_en.lower()} {noun_en} · {c_zh}{s_zh}{noun_zh}",
            "category": _CATEGORIES[label],
            "price": f"{price:.2f}",
            "shop": _SHOPS[rng.integers(len(_SHOPS))],
            "url": f"https://example.com/demo/{item_id}",
            "image": f"photos/{item_id}.jpg",
        })
    catalogue = folder / "catalogue.jsonl"
    atomic_write(catalogue, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return catalogue


def write_query_samples(folder: Path, count: int = 12, *, seed: int = SEED) -> Path:
    """Photos from Fashion-MNIST's test split (not in the catalogue) to try searching with."""
    images, labels = fashion_mnist.load("test")
    rng = np.random.default_rng(seed + 1)
    out = folder / "try-these"
    out.mkdir(parents=True, exist_ok=True)
    for n, idx in enumerate(rng.permutation(len(labels))[:count]):
        path = out / f"query-{n:02d}-{_CLASSES[int(labels[idx])][0].replace(' ', '-')}.jpg"
        if not path.exists():
            _en, _zh, rgb = _COLOURS[rng.integers(len(_COLOURS))]
            product_photo(images[idx], rgb).save(path, "JPEG", quality=92)
    return out


def configure(data_dir: Path, *, port: int) -> None:
    """Set the site's environment for the demo (before Django is set up)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "jiansuo.web.settings",
        "JIANSUO_DATA_DIR": str(data_dir / "site"),
        "JIANSUO_SECRET_KEY": key_file.read_text().strip(),
        "JIANSUO_DEBUG": "0",
        "JIANSUO_HTTPS": "0",          # served on plain http://127.0.0.1
        "JIANSUO_SERVE_FILES": "1",    # no separate web server for photos and styles
        "JIANSUO_DEMO": "1",
        "JIANSUO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "JIANSUO_CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port},http://localhost:{port}",
    })
    os.environ.pop("DATABASE_URL", None)


def create_demo_user() -> None:
    """The demo login: staff, allowed to manage the catalogue in the admin (not a superuser)."""
    from django.contrib.auth.models import Permission, User

    user, _created = User.objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@example.com"})
    user.set_password(DEMO_PASSWORD)
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jiansuo.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000, help="catalogue size (default 2000, at most 60000)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    parser.add_argument("--data-dir", type=Path, default=Path("demo-data"), help="where everything is kept")
    parser.add_argument("--no-serve", action="store_true", help="build and index, then exit")
    args = parser.parse_args(argv)
    if not fashion_mnist.available():
        parser.error(f"Fashion-MNIST is not installed in {config.fashion_mnist_dir()}: "
                     "apt-get install dataset-fashion-mnist")
    if not 1 <= args.items <= 60000:
        parser.error("--items must be between 1 and 60000")
    data_dir = args.data_dir.resolve()
    configure(data_dir, port=args.port)

    import django
    from django.core.management import call_command

    django.setup()
    print(f"[1/4] database: {data_dir / 'site'}", flush=True)
    call_command("migrate", verbosity=0)
    print(f"[2/4] building a demo catalogue of {args.items} products from Fashion-MNIST", flush=True)
    catalogue = build_catalogue(data_dir / "catalogue", args.items)
    samples = write_query_samples(data_dir)
    print("[3/4] importing and indexing it (only what changed since the last run)", flush=True)
    from jiansuo.index import IndexError_
    from jiansuo.web.catalog import search

    try:
        search.get_store()
    except IndexError_:  # an earlier demo's index, from an older version: embed the catalogue again
        from jiansuo.web.catalog.services import rebuild_store

        print(f"      the index is from an older version: forgot its {rebuild_store()} vectors", flush=True)
    call_command("import_catalog", str(catalogue))
    # Products from an earlier, larger demo run are not in this catalogue: remove them.
    from jiansuo.web.catalog import services
    from jiansuo.web.catalog.models import Product

    wanted = {json.loads(line)["item_id"] for line in catalogue.read_text(encoding="utf-8").splitlines()}
    stale = Product.objects.filter(item_id__startswith="FM-").exclude(item_id__in=wanted)
    if stale.exists():
        print(f"      removed {services.delete_products(stale)} products of an earlier, larger demo", flush=True)
    create_demo_user()
    url = f"http://127.0.0.1:{args.port}/"
    print(f"[4/4] demo account: user {DEMO_USER!r}, password {DEMO_PASSWORD!r}", flush=True)
    print(f"      photos to try searching with: {samples}", flush=True)
    if args.no_serve:
        print(f"built; serve it with: python -m jiansuo.demo --port {args.port}")
        return 0
    print(f"\n  Jiansuo demo: {url}   (log in as {DEMO_USER} / {DEMO_PASSWORD}; Ctrl-C stops it)\n", flush=True)
    call_command("serve", "--bind", f"127.0.0.1:{args.port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
