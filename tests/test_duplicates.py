"""`jiansuo duplicates`: planted copies of real photos and product shots are found, distinct products are not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from jiansuo.cli import main
from jiansuo.demo import product_photo
from tests.conftest import PHOTO_NAMES, real_photo

PLANTED = {  # copy file -> its original
    "copies/astronaut-reencoded.jpg": "photos/astronaut.jpg",
    "copies/coffee-resized.jpg": "photos/coffee.jpg",
    "copies/chelsea-cropped.jpg": "photos/chelsea.jpg",
    "copies/rocket-watermarked.jpg": "photos/rocket.jpg",
    "copies/shirt-3-reencoded.jpg": "products/shirt-3.jpg",
}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fashion_items(n: int) -> list[Image.Image]:
    from jiansuo.datasets import fashion_mnist

    if not fashion_mnist.available():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images, labels = fashion_mnist.load("test")
    # One item of each of the first n classes: distinct products, several of them alike (tops, a dress).
    picks = [int(np.flatnonzero(labels == c)[0]) for c in range(n)]
    return [product_photo(images[i], (31, 58, 110)) for i in picks]


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """A catalogue of distinct real photos and product shots, plus planted copies of five of them."""
    root = tmp_path_factory.mktemp("dup") / "shop"
    for sub in ("photos", "products", "copies"):
        (root / sub).mkdir(parents=True)
    for name in PHOTO_NAMES:
        real_photo(name).save(root / "photos" / f"{name}.jpg", quality=92)
    for n, img in enumerate(_fashion_items(8)):
        img.save(root / "products" / f"shirt-{n}.jpg", quality=92)
    Image.open(root / "photos/astronaut.jpg").save(root / PLANTED_KEYS[0], quality=25)
    coffee = Image.open(root / "photos/coffee.jpg")
    coffee.resize((coffee.width // 3, coffee.height // 3)).save(root / PLANTED_KEYS[1], quality=70)
    cat = Image.open(root / "photos/chelsea.jpg")
    w, h = cat.size
    cat.crop((w // 10, h // 12, w - w // 8, h - h // 10)).save(root / PLANTED_KEYS[2], quality=85)
    rocket = Image.open(root / "photos/rocket.jpg").convert("RGB")
    draw = ImageDraw.Draw(rocket)
    draw.text((20, rocket.height - 60), "shop.example", fill=(255, 255, 255),
              font=ImageFont.load_default(size=40), stroke_width=2, stroke_fill=(0, 0, 0))
    rocket.save(root / PLANTED_KEYS[3], quality=80)
    Image.open(root / "products/shirt-3.jpg").save(root / PLANTED_KEYS[4], quality=30)
    return root


PLANTED_KEYS = list(PLANTED)


@pytest.fixture(scope="module")
def index(shop, tmp_path_factory) -> Path:
    idx = tmp_path_factory.mktemp("dupidx") / "shop.idx"
    assert main(["index", str(shop), "--index", str(idx), "--no-progress"]) == 0
    return idx


def _groups(capsys, index, *extra) -> list[dict]:
    code, out, err = run(capsys, "duplicates", "--index", index, "--json", *extra)
    assert code == 0, err
    return json.loads(out)["groups"]


def test_finds_every_planted_copy_and_no_distinct_products(index, capsys):
    groups = _groups(capsys, index)
    found = {tuple(g["ids"]) for g in groups}
    assert found == {tuple(sorted((c, o))) for c, o in PLANTED.items()}, groups


def test_json_groups_sorted_by_lowest_pairwise_score(index, capsys):
    groups = _groups(capsys, index)
    scores = [g["score"] for g in groups]
    assert scores == sorted(scores, reverse=True)
    assert all(set(g) == {"ids", "score"} and g["ids"] == sorted(g["ids"]) for g in groups)
    assert all(0.75 <= s <= 1.0 for s in scores)


def test_cosine_alone_at_a_low_threshold_groups_distinct_products(index, capsys):
    # Without verification a low threshold joins look-alikes; verification keeps only the copies.
    loose = _groups(capsys, index, "--threshold", "0.6", "--no-verify")
    planted = {tuple(sorted((c, o))) for c, o in PLANTED.items()}
    assert any(tuple(g["ids"]) not in planted for g in loose), loose
    verified = _groups(capsys, index, "--threshold", "0.6")
    assert {tuple(g["ids"]) for g in verified} == planted


def test_threshold_drops_groups_below_it(index, capsys):
    every = _groups(capsys, index)
    cut = (every[0]["score"] + every[-1]["score"]) / 2
    strict = _groups(capsys, index, "--threshold", f"{cut:.4f}")
    assert strict == [g for g in every if g["score"] >= cut] and 0 < len(strict) < len(every)


def test_text_output_and_contact_sheet(index, capsys, tmp_path):
    sheet = tmp_path / "dups.jpg"
    code, out, err = run(capsys, "duplicates", "--index", index, "--sheet", sheet)
    assert code == 0, err
    assert "candidates" in err and "verifying" in err   # progress bars on stderr, results alone on stdout
    assert "candidates" not in run(capsys, "duplicates", "--index", index, "--no-progress")[2]
    lines = out.strip().splitlines()
    assert len(lines) == len(PLANTED) and all(len(line.split()) == 3 for line in lines)
    img = Image.open(sheet)
    assert img.size[1] == len(PLANTED) * (200 + 34) and img.size[0] == 2 * 200


def test_unreadable_image_is_reported_and_skipped(shop, index, capsys, tmp_path):
    # The cropped copy needs local features (its cosine is below the accept-alone threshold): break it.
    import shutil

    broken = tmp_path / "shop"
    shutil.copytree(shop, broken)
    (broken / "copies/chelsea-cropped.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    idx = tmp_path / "copy.idx"
    shutil.copytree(index, idx)
    from jiansuo.search import open_store

    with open_store(idx) as store:
        store.set_meta("root", str(broken))
    code, out, err = run(capsys, "duplicates", "--index", idx, "--json")
    assert code == 0, err
    assert "skipped copies/chelsea-cropped.jpg:" in err
    found = {tuple(g["ids"]) for g in json.loads(out)["groups"]}
    assert ("copies/chelsea-cropped.jpg", "photos/chelsea.jpg") not in found
    assert ("copies/coffee-resized.jpg", "photos/coffee.jpg") in found


def test_local_features_tell_a_copy_from_another_photo(shop):
    from jiansuo.features import local
    from jiansuo.search.duplicates import DEFAULT_RULE

    limit = DEFAULT_RULE.max_disagreement
    original = local.extract(shop / "photos/chelsea.jpg")
    cropped = local.compare(original, local.extract(shop / "copies/chelsea-cropped.jpg"))
    assert cropped.disagreement <= limit and cropped.inliers >= 50   # aligned by keypoints
    resized = local.compare(local.extract(shop / "photos/coffee.jpg"), local.extract(shop / "copies/coffee-resized.jpg"))
    assert resized.disagreement <= limit and resized.inliers == 0      # the frames alone align it
    marked = local.compare(local.extract(shop / "photos/rocket.jpg"), local.extract(shop / "copies/rocket-watermarked.jpg"))
    assert 0 < marked.disagreement <= limit                            # the watermark differs, nothing else
    assert local.compare(original, local.extract(shop / "photos/coffee.jpg")).disagreement > 0.5


def test_a_variant_sharing_most_of_a_picture_is_not_a_copy(shop, tmp_path):
    """Two colourings of one product, and a product whose part was replaced (the same cone, another
    scoop): their keypoints match, their pixels do not."""
    from jiansuo.features import local
    from jiansuo.search.duplicates import DEFAULT_RULE

    shirt = Image.open(shop / "products/shirt-3.jpg").convert("RGB")
    recoloured = Image.fromarray(np.asarray(shirt)[:, :, ::-1].copy())   # blue becomes red, white stays white
    recoloured.save(tmp_path / "recoloured.jpg", quality=92)
    cat = Image.open(shop / "photos/chelsea.jpg").convert("RGB")
    w, h = cat.size
    changed = cat.copy()
    changed.paste(Image.open(shop / "photos/coffee.jpg").convert("RGB").resize((w // 2, h // 2)), (w // 2, 0))
    changed.save(tmp_path / "changed.jpg", quality=92)
    original_cat = local.extract(shop / "photos/chelsea.jpg")
    for a, b in ((local.extract(shop / "products/shirt-3.jpg"), local.extract(tmp_path / "recoloured.jpg")),
                 (original_cat, local.extract(tmp_path / "changed.jpg"))):
        assert local.compare(a, b).disagreement > DEFAULT_RULE.max_disagreement
    # The unchanged three quarters still align by keypoints: it is the pixels that say no.
    transform, inliers = local.affine(original_cat, local.extract(tmp_path / "changed.jpg"))
    assert transform is not None and inliers >= local.MIN_INLIERS


def _wallpaper(w: int, h: int, glow: tuple[float, float], colour: tuple[int, int, int]) -> Image.Image:
    """A flat desktop wallpaper: a dark gradient with one soft glow, too smooth for keypoints."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot(x / w - glow[0], y / h - glow[1])
    light = np.clip(1.2 - 2.2 * d, 0, 1)[..., None]
    base = np.array([12, 14, 30], np.float32) + 0.15 * np.float32(y / h)[..., None] * 255
    return Image.fromarray(np.clip(base + light * np.array(colour, np.float32), 0, 255).astype(np.uint8))


def test_a_crop_too_plain_for_keypoints_is_placed_within_its_picture(tmp_path):
    """A crop of a smooth wallpaper has no keypoints to align; where it correlates with a part of the
    original settles it. Another wallpaper of the same kind, and a blank crop, are not copies."""
    from jiansuo.features import local
    from jiansuo.search.duplicates import DEFAULT_RULE

    limit = DEFAULT_RULE.max_disagreement
    wall = _wallpaper(1600, 900, (0.3, 0.4), (90, 60, 160))
    wall.save(tmp_path / "wall.png")
    wall.crop((200, 150, 1250, 750)).save(tmp_path / "crop.jpg", quality=85)
    _wallpaper(1600, 900, (0.7, 0.6), (90, 60, 160)).save(tmp_path / "other.png")
    original, crop, other = (local.extract(tmp_path / n) for n in ("wall.png", "crop.jpg", "other.png"))
    transform, inliers = local.affine(crop, original)
    assert transform is None or inliers < local.MIN_INLIERS        # the keypoints cannot align it
    for found in (local.compare(crop, original), local.compare(original, crop)):
        assert found.disagreement <= limit and found.inliers == 0
    placed = local.placement(crop, original)                        # about where and how large it was cut
    assert placed is not None
    assert np.allclose(np.diag(placed[:, :2]), 1050 / 1600, rtol=0.1)
    assert np.allclose(placed[:, 2], np.array([200, 150]) * local.SIDE / 1600, atol=12)
    assert local.compare(crop, other).disagreement > limit
    # A blank crop (the dark corner alone) matches every dark area: it is not placed.
    Image.new("RGB", (600, 400), (12, 14, 30)).save(tmp_path / "blank.jpg", quality=85)
    blank = local.extract(tmp_path / "blank.jpg")
    assert local.placement(blank, original) is None
    assert local.compare(blank, original).disagreement > limit
