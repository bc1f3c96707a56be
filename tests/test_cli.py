"""End to end through the `jiansuo` command line, with the real model and real photos."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from jiansuo.cli import main
from jiansuo.index import Index
from tests.conftest import real_photo
from tests.test_images import _huge_png_header


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def search_json(capsys, index, *queries, k=3, extra=()):
    code, out, err = run(capsys, "search", *queries, "--index", index, "--top-k", k, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_index_then_search_modified_copies_find_their_original(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    code, out, _ = run(capsys, "index", catalog, "--index", idx, "--no-progress")
    assert code == 0 and "indexed 12" in out and "skipped 0" in out
    originals = {p.stem: p.relative_to(catalog).as_posix() for p in catalog.rglob("*.*")}
    queries = []
    for name in ["astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry"]:
        img = real_photo(name)
        w, h = img.size
        variants = {
            "crop": img.crop((w // 10, h // 10, w - w // 8, h - h // 8)),
            "small": img.resize((w // 3, h // 3)),
            "rotated": img.rotate(8, expand=True, fillcolor=(255, 255, 255)),
        }
        for kind, v in variants.items():
            q = tmp_path / "q" / f"{name}-{kind}.jpg"
            q.parent.mkdir(exist_ok=True)
            v.save(q, quality=40)  # heavy JPEG recompression on top
            queries.append((q, originals[name]))
    answers = search_json(capsys, idx, *[q for q, _ in queries], k=3)
    plain = search_json(capsys, idx, *[q for q, _ in queries], k=3, extra=["--intent", "same"])
    assert [a["query"] for a in answers] == [str(q) for q, _ in queries]  # query order kept
    for (q, want), a, p in zip(queries, answers, plain):
        assert a["results"][0]["id"] == want, (q.name, a["results"])
        assert len(a["results"]) == 3
        # The default ranks the rest by products like it; the plain ranking is by score alone.
        scores = [r["score"] for r in p["results"]]
        assert p["results"][0]["id"] == want and scores == sorted(scores, reverse=True), (q.name, p["results"])


def test_incremental_reindex_add_change_delete(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    before = Index.open(idx).items()
    deleted = next(iter(sorted(catalog.rglob("*.bmp"))))
    deleted.unlink()
    changed = next(iter(sorted(catalog.rglob("*.webp"))))
    real_photo("chelsea").rotate(90, expand=True).save(changed, "WEBP")
    real_photo("astronaut").crop((0, 0, 200, 300)).save(catalog / "misc" / "new.png")
    code, out, _ = run(capsys, "index", catalog, "--index", idx, "--no-progress", "--json")
    summary = json.loads(out)
    assert (summary["indexed"], summary["removed"], summary["unchanged"]) == (2, 1, 10)
    after = Index.open(idx).items()
    rel = lambda p: p.relative_to(catalog).as_posix()  # noqa: E731
    assert rel(deleted) not in after and "misc/new.png" in after
    assert after[rel(changed)].sha256 != before[rel(changed)].sha256
    # a third run has nothing to do
    code, out, _ = run(capsys, "index", catalog, "--index", idx, "--no-progress", "--json")
    assert json.loads(out)["indexed"] == 0 and json.loads(out)["unchanged"] == 12


def test_broken_files_are_reported_and_skipped(tmp_path, catalog, capsys):
    bad = catalog / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("hello, I am a text file")
    data = (catalog / "women" / "tops" / "astronaut.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (bad / "huge.png").write_bytes(_huge_png_header(50000, 40000))
    idx = tmp_path / "c.idx"
    code, out, _ = run(capsys, "index", catalog, "--index", idx, "--no-progress", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["indexed"] == 12 and summary["total"] == 12
    reasons = {s["id"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"bad/empty.jpg", "bad/text.jpg", "bad/truncated.jpg", "bad/huge.png"}
    assert "empty" in reasons["bad/empty.jpg"] and "not an image" in reasons["bad/text.jpg"]
    assert "truncated" in reasons["bad/truncated.jpg"] and "too large" in reasons["bad/huge.png"]
    # the index stays valid and searchable
    [answer] = search_json(capsys, idx, catalog / "women" / "tops" / "astronaut.jpg", k=1)
    assert answer["results"][0]["id"] == "women/tops/astronaut.jpg"
    # a bad query image is a clear error, not a traceback
    code, _, err = run(capsys, "search", bad / "text.jpg", "--index", idx)
    assert code == 1 and "text.jpg" in err and "not an image" in err


def test_interrupted_indexing_resumes_without_duplicates(tmp_path, photo_images):
    root = tmp_path / "many"
    root.mkdir()
    base = list(photo_images.values())
    for n in range(96):
        img = base[n % len(base)].rotate(n * 3, expand=True, fillcolor=(255, 255, 255))
        img.save(root / f"item{n:03d}.jpg", quality=85)
    idx = tmp_path / "c.idx"
    cmd = [sys.executable, "-m", "jiansuo.cli", "index", str(root), "--index", str(idx), "--no-progress",
           "--batch-size", "8", "--commit-every", "8", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if (idx / "index.sqlite").exists():
            try:
                with sqlite3.connect(idx / "index.sqlite") as db:
                    committed = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            except sqlite3.Error:
                committed = 0
            if committed >= 16:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Index.open(idx)
    n_partial = len(partial)
    assert 16 <= n_partial < 96, "the run should have been killed part-way"
    assert len(partial.vectors()[0]) == n_partial  # every committed row has its vector
    partial.close()
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    assert summary["unchanged"] == n_partial and summary["indexed"] == 96 - n_partial
    ids, matrix = Index.open(idx).vectors()
    assert len(ids) == len(set(ids)) == 96 and matrix.shape == (96, 1280)


def test_add_remove_info_and_sheet(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    extra = catalog / "misc" / "extra.jpg"
    real_photo("chelsea").transpose(Image.FLIP_LEFT_RIGHT).save(extra)
    code, out, _ = run(capsys, "add", extra, "--index", idx)
    assert code == 0 and "added 1" in out and "13 images" in out
    code, out, _ = run(capsys, "remove", "misc/extra.jpg", "--index", idx)
    assert code == 0 and "removed 1" in out and "12 images" in out
    code, out, _ = run(capsys, "info", "--index", idx, "--json")
    info = json.loads(out)
    assert info["images"] == 12 and info["model"]["name"] == "efficientnet-lite0" and info["dim"] == 1280
    sheet = tmp_path / "sheet.jpg"
    q = catalog / "women" / "tops" / "astronaut.jpg"
    code, out, _ = run(capsys, "search", q, q, "--index", idx, "-k", "4", "--sheet", sheet)
    assert code == 0 and Image.open(sheet).size == (5 * 200, 2 * (200 + 34))
    code, _, err = run(capsys, "search", q, "--index", idx, "--model", "vgg16")
    assert code == 1 and "built with --model efficientnet-lite0" in err
    code, out, _ = run(capsys, "search", q, "--index", idx, "-k", "12", "--min-score", "0.99", "--json")
    assert [r["id"] for r in json.loads(out)[0]["results"]] == ["women/tops/astronaut.jpg"]


def test_export_h5_import_h5_round_trip(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    h5 = tmp_path / "featureCNN.h5"
    code, out, _ = run(capsys, "export-h5", "--index", idx, h5)
    assert code == 0 and "wrote 12" in out
    with h5py.File(h5) as f:  # the original layout, as query_online.py reads it
        feats, names = f["dataset_1"][:], f["dataset_2"][:]
    assert feats.shape == (12, 1280) and feats.dtype == np.float32 and isinstance(names[0], bytes)
    idx2 = tmp_path / "imported.idx"
    code, out, _ = run(capsys, "import-h5", h5, "--index", idx2, "--model", "efficientnet-lite0", "--root", catalog)
    assert code == 0 and "imported 12" in out
    a_ids, a = Index.open(idx).vectors()
    b = Index.open(idx2).get_vectors(a_ids)
    np.testing.assert_allclose(a, b, atol=1e-6)
    [answer] = search_json(capsys, idx2, catalog / "misc" / "coffee.png" if (catalog / "misc" / "coffee.png").exists()
                           else next(catalog.rglob("coffee.*")), k=1)
    assert Path(answer["results"][0]["id"]).stem == "coffee"
    # a file of the wrong width is refused and the index is untouched
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["dataset_1"] = np.ones((2, 512), np.float32)
        f["dataset_2"] = np.array([b"a.jpg", b"b.jpg"])
    code, _, err = run(capsys, "import-h5", tmp_path / "bad.h5", "--index", idx2, "--model", "efficientnet-lite0")
    assert code == 1 and "512-d" in err and len(Index.open(idx2)) == 12


def test_a_bad_query_is_reported_and_the_others_are_answered(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    good = tmp_path / "q.jpg"
    real_photo("coffee").resize((300, 200)).save(good, quality=80)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a photo")
    code, out, err = run(capsys, "search", good, bad, good, "--index", idx, "--json", "-k", "1")
    assert code == 1 and "bad.jpg" in err
    answers = json.loads(out)
    assert [a["query"] for a in answers if "error" not in a] == [str(good), str(good)]
    assert [a for a in answers if "error" in a] == [{"query": str(bad), "error": "not an image file (format not "
                                                     "recognised)", "results": []}]
    assert all(Path(a["results"][0]["id"]).stem == "coffee" for a in answers if "error" not in a)


def _peak_rss_mib(argv: list[str]) -> float:
    """Peak resident memory of ``jiansuo ARGV`` run in its own process (measured by a wrapper process)."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
               "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "jiansuo.cli", *argv],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip()) / 1024


def test_many_queries_are_searched_in_bounded_memory(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    qdir = tmp_path / "queries"
    qdir.mkdir()
    for n, name in enumerate(["astronaut", "coffee", "chelsea", "rocket"] * 5):
        real_photo(name).rotate(n, expand=True, fillcolor="white").save(qdir / f"q{n:02d}.jpg", quality=85)
    queries = sorted(str(p) for p in qdir.iterdir())
    # 100 queries already fill the pipeline (a batch in the network, three decoded ahead); 600 must not
    # need more. When every query was held at once, each cost ~9 MB.
    some = _peak_rss_mib(["search", *(queries * 5), "--index", str(idx), "--json"])
    many = _peak_rss_mib(["search", *(queries * 30), "--index", str(idx), "--json"])
    assert many < 1024, many
    assert many - some < 100, (some, many)


def side_by_side(left: Image.Image, right: Image.Image, height: int = 300) -> Image.Image:
    """Two photos next to each other on one canvas, as a shopper's photo of two products."""
    a = left.resize((round(left.width * height / left.height), height))
    b = right.resize((round(right.width * height / right.height), height))
    canvas = Image.new("RGB", (a.width + b.width, height), "white")
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    return canvas


def test_a_box_searches_that_part_of_the_photo(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    both = tmp_path / "both.jpg"
    photo = side_by_side(real_photo("chelsea"), real_photo("rocket"))
    photo.save(both, quality=85)
    half = real_photo("chelsea").width * 300 / real_photo("chelsea").height / photo.width
    [left] = search_json(capsys, idx, both, k=1, extra=["--box", f"0,0,{half:.3f},1"])
    [right] = search_json(capsys, idx, both, k=1, extra=["--box", f"{half:.3f},0,1,1"])
    assert Path(left["results"][0]["id"]).stem == "chelsea"
    assert Path(right["results"][0]["id"]).stem == "rocket"


def test_bad_boxes_are_clear_errors(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    query = next(catalog.rglob("coffee.*"))
    for box, words in [("0,0,1.5,1", "from 0 to 1"), ("0.5,0,0.5,1", "x0 < x1"), ("0.6,0,0.2,1", "x0 < x1"),
                       ("a,b,c,d", "four numbers"), ("0,0,1", "four numbers"), ("0,0,1,1,1", "four numbers"),
                       ("nan,0,1,1", "four numbers"), ("", "four numbers")]:
        code, out, err = run(capsys, "search", query, "--index", idx, "--box", box)
        assert code == 1 and "--box" in err and words in err, (box, err)
        assert "Traceback" not in err and out == ""


def test_an_index_of_an_older_preprocessing_is_refused_then_embedded_again(tmp_path, catalog, capsys):
    idx = tmp_path / "c.idx"
    run(capsys, "index", catalog, "--index", idx, "--no-progress")
    # What the previous version of the default model wrote (average pool, the whole canvas fitted).
    old = {"name": "efficientnet-lite0", "version": "1", "dim": 1280, "input_size": 224,
           "preprocessing": "RGB, fit in 224x224 padded with white (bilinear), (x-127)/128"}
    with Index.open(idx) as index:
        index.set_meta("model", json.dumps(old))
    query = next(catalog.rglob("rocket.*"))
    code, out, err = run(capsys, "search", query, "--index", idx)
    assert code == 1 and out == "" and "older way of preparing images" in err and "re-index" in err
    code, out, err = run(capsys, "index", catalog, "--index", idx, "--no-progress")
    assert code == 0 and "embedding every image again" in err and "indexed 12" in out
    [answer] = search_json(capsys, idx, query, k=1)
    assert Path(answer["results"][0]["id"]).stem == "rocket"
