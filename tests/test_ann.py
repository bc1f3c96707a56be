"""Approximate search: agrees with exact search on real embeddings, follows every index change at once,
persists with the index, notices a stale or foreign graph, filters, and is wired to the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from jiansuo.cli import main
from jiansuo.datasets import fashion_mnist
from jiansuo.index import Index, ItemInfo, ann_store, store
from jiansuo.search import ann, auto
from jiansuo.search.ann import AnnSearcher
from jiansuo.search.folder import FolderStore

N_CATALOG, N_QUERIES = 400, 40


@pytest.fixture(scope="session")
def real_vectors(extractor) -> np.ndarray:
    """Real EfficientNet-Lite0 embeddings of the first 440 Fashion-MNIST test photos (one per row)."""
    images, _ = fashion_mnist.load("test")
    photos = [Image.fromarray(im).convert("RGB") for im in images[: N_CATALOG + N_QUERIES]]
    return extractor.embed_images(photos, batch_size=64)


@pytest.fixture
def make_index(tmp_path, extractor, real_vectors):
    """Factory: an index of the real catalogue vectors (ids item000.jpg ...), in several commits."""

    def make(name="c.idx", dtype="float32", n=N_CATALOG) -> Index:
        index = Index.create(tmp_path / name, extractor.describe(), dtype=dtype)
        for start in range(0, n, 150):
            stop = min(n, start + 150)
            index.add(real_vectors[start:stop], [ItemInfo(f"item{i:03d}.jpg") for i in range(start, stop)])
        return index

    yield make
    ann_store._OPEN.clear()  # each test starts from what is on disk


def queries(real_vectors) -> np.ndarray:
    return real_vectors[N_CATALOG:]


def recall(results, truth) -> float:
    """Share of the exact hits the approximate search found (a query with no exact hits counts as found)."""
    return float(np.mean([len({h.id for h in a.hits} & {h.id for h in e.hits}) / len(e.hits) if e.hits else 1.0
                          for a, e in zip(results, truth)]))


def test_ann_agrees_with_exact_and_scores_are_exact_cosines(make_index, real_vectors):
    index = make_index(dtype="float16")
    exact = FolderStore(index).search(queries(real_vectors), 10, mode="exact")
    approx = FolderStore(index).search(queries(real_vectors), 10, mode="ann", ef=16)
    assert recall(approx, exact) >= 0.95
    for r, e in zip(approx, exact):
        want = {h.id: h.score for h in e.hits}
        assert [h.score for h in r.hits] == sorted((h.score for h in r.hits), reverse=True)
        for h in r.hits:
            if h.id in want:
                assert h.score == pytest.approx(want[h.id], abs=1e-5)  # re-ranked with the stored vectors


def test_pca_projection_keeps_recall(make_index, real_vectors, monkeypatch):
    monkeypatch.setattr(ann_store, "PCA_MIN_VECTORS", 100)
    index = make_index()
    graph = ann_store.ensure(index, params=ann_store.Params(reduce_dim=64))
    assert graph.pca is not None and graph.dim == 64 and graph.pca.shape == (index.dim, 64)
    exact = FolderStore(index).search(queries(real_vectors), 10, mode="exact")
    approx = FolderStore(index).search(queries(real_vectors), 10, mode="ann")
    assert recall(approx, exact) >= 0.95
    # the projection is what the graph holds: nearly orthonormal columns from the uncentred PCA
    np.testing.assert_allclose(graph.pca.T @ graph.pca, np.eye(64), atol=1e-4)


def test_add_replace_and_remove_are_reflected_immediately_without_rebuild(make_index, real_vectors, tmp_path):
    index = make_index()
    q = queries(real_vectors)
    FolderStore(index).search(q[:1], 10, mode="ann")
    graph = ann_store.ensure(index)
    count_before = graph.hnsw.get_current_count()

    writer = Index.open(tmp_path / "c.idx")  # another handle, as another process would change it
    writer.add(q[:1], [ItemInfo("new.jpg")])
    hits = FolderStore(index).search(q[:1], 3, mode="ann")[0].hits
    assert hits[0].id == "new.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-5)

    victim = FolderStore(index).search(q[1:2], 1, mode="ann")[0].hits[0].id
    writer.remove([victim])
    assert victim not in {h.id for r in FolderStore(index).search(q, 10, mode="ann") for h in r.hits}

    # replace: the same id gets another vector; the old vector must not answer for it any more
    writer.add(real_vectors[7:8], [ItemInfo("item003.jpg")])
    assert FolderStore(index).search(real_vectors[7:8], 2, mode="ann")[0].hits[0].score == pytest.approx(1.0, abs=1e-5)
    old_hits = FolderStore(index).search(real_vectors[3:4], 10, mode="ann")[0].hits
    assert all(h.score < 0.9999 for h in old_hits if h.id == "item003.jpg")

    # deleted labels are reused, so the graph did not grow beyond the one new image, and was not rebuilt
    writer.add(q[2:3], [ItemInfo("another.jpg")])
    FolderStore(index).search(q[:1], 1, mode="ann")
    assert ann_store.ensure(index) is graph
    assert graph.hnsw.get_current_count() == count_before + 1
    assert graph.alive == len(index) == N_CATALOG + 1


def test_persisted_graph_round_trip(make_index, real_vectors, tmp_path):
    index = make_index()
    first = FolderStore(index).search(queries(real_vectors), 5, mode="ann")
    folder = tmp_path / "c.idx" / "ann"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generation"] == index.generation and manifest["alive"] == N_CATALOG
    assert not list(folder.glob("*.tmp"))
    assert sorted(p.name for p in folder.iterdir() if p.name != "write.lock") == sorted(
        ["manifest.json", manifest["files"]["graph"], manifest["files"]["state"]])
    ann_store._OPEN.clear()
    reopened = Index.open(tmp_path / "c.idx")
    loaded = ann_store.load(reopened)
    assert loaded is not None and loaded.generation == index.generation and loaded.alive == N_CATALOG
    again = FolderStore(reopened).search(queries(real_vectors), 5, mode="ann")
    assert [[h.id for h in r.hits] for r in again] == [[h.id for h in r.hits] for r in first]
    assert ann_store.info(reopened)["in_step"]


def test_stale_graph_is_detected_and_caught_up_incrementally(make_index, real_vectors, tmp_path, monkeypatch):
    index = make_index()
    ann_store.ensure(index, persist=True)
    saved_gen = index.generation
    index.remove([f"item{i:03d}.jpg" for i in range(0, 30)])
    index.add(queries(real_vectors)[:5], [ItemInfo(f"q{i}.jpg") for i in range(5)])
    ann_store._OPEN.clear()

    assert not ann_store.info(index)["in_step"]
    stale = ann_store.load(index)
    assert stale.generation == saved_gen and stale.label_of("item000.jpg") is not None
    graph = ann_store.ensure(index)
    assert graph.generation == index.generation and graph.alive == len(index)
    assert graph.label_of("item000.jpg") is None and graph.label_of("q0.jpg") is not None
    assert graph.changes == 35  # 30 marked deleted + 5 inserted, nothing rebuilt

    # compaction moves every vector to a new segment: recognised by digest, relocated, not re-inserted
    monkeypatch.setattr(store, "_COMPACT_DEAD_SHARE", 0.0)
    index.compact()
    graph.changes = 0
    exact = FolderStore(index).search(queries(real_vectors), 10, mode="exact")
    approx = FolderStore(index).search(queries(real_vectors), 10, mode="ann")
    assert graph.changes == 0 and recall(approx, exact) >= 0.95
    assert {h.id for r in approx for h in r.hits} <= set(index.items())


def test_graph_from_another_index_or_unreadable_is_rebuilt(make_index, real_vectors, tmp_path):
    a = make_index("a.idx")
    FolderStore(a).search(queries(real_vectors), 5, mode="ann")
    b = make_index("b.idx", n=200)
    shutil.copytree(tmp_path / "a.idx" / "ann", tmp_path / "b.idx" / "ann")
    assert ann_store.load(b) is None  # identity differs: another index's graph
    results = FolderStore(b).search(queries(real_vectors), 5, mode="ann")
    assert {h.id for r in results for h in r.hits} <= set(b.items())
    assert ann_store.ensure(b).alive == 200

    ann_store._OPEN.clear()
    (tmp_path / "b.idx" / "ann" / "manifest.json").write_text("{ not json")
    with pytest.warns(UserWarning, match="unreadable ANN manifest"):
        again = FolderStore(b).search(queries(real_vectors), 5, mode="ann")
    assert [[h.id for h in r.hits] for r in again] == [[h.id for h in r.hits] for r in results]
    assert json.loads((tmp_path / "b.idx" / "ann" / "manifest.json").read_text())["alive"] == 200


@pytest.mark.parametrize("path", ["graph filter", "exact subset"])
def test_allowed_mask(make_index, real_vectors, monkeypatch, path):
    if path == "graph filter":  # the catalogue is small: force the in-graph filter
        monkeypatch.setattr(ann, "EXACT_MASK_MAX", 0)
    index = make_index()
    ids = index.ids()
    mask = np.array([int(i[4:7]) % 3 != 0 for i in ids])
    exact = FolderStore(index).search(queries(real_vectors), 10, mode="exact", allowed=mask)
    approx = FolderStore(index).search(queries(real_vectors), 10, mode="ann", allowed=mask)
    allowed = {i for i, m in zip(ids, mask) if m}
    assert all(h.id in allowed for r in approx for h in r.hits)
    assert all(len(r.hits) == 10 for r in approx) and recall(approx, exact) >= 0.95
    with pytest.raises(ValueError, match="allowed mask"):
        FolderStore(index).search(queries(real_vectors), 10, mode="ann", allowed=mask[:-1])


def test_min_score_and_bad_options(make_index, real_vectors):
    index = make_index()
    exact = FolderStore(index).search(queries(real_vectors), 50, mode="exact", min_score=0.8)
    approx = FolderStore(index).search(queries(real_vectors), 50, mode="ann", min_score=0.8)
    for a, e in zip(approx, exact):
        assert all(h.score >= 0.8 for h in a.hits)
        assert len(a.hits) <= len(e.hits)
    assert recall(approx, exact) >= 0.95
    with pytest.raises(ValueError, match="ef"):
        AnnSearcher(index, ef=0)


def test_auto_mode_uses_the_graph_only_above_the_threshold(make_index, real_vectors, monkeypatch, tmp_path):
    index = make_index()
    monkeypatch.setenv("JIANSUO_ANN_THRESHOLD", str(N_CATALOG + 1))
    exact = FolderStore(index).search(queries(real_vectors), 10, mode="auto")
    assert not (tmp_path / "c.idx" / "ann").exists()
    monkeypatch.setenv("JIANSUO_ANN_THRESHOLD", str(N_CATALOG))
    approx = FolderStore(index).search(queries(real_vectors), 10, mode="auto")
    assert (tmp_path / "c.idx" / "ann" / "manifest.json").is_file()
    assert {r.mode for r in exact} == {"exact"} and {r.mode for r in approx} == {"ann"}
    assert recall(approx, exact) >= 0.95


def test_auto_mode_switches_float16_indexes_to_the_graph_sooner(make_index, real_vectors, monkeypatch, tmp_path):
    monkeypatch.delenv("JIANSUO_ANN_THRESHOLD", raising=False)
    monkeypatch.setattr(auto, "EXACT_LIMIT", {"float32": N_CATALOG + 1, "float16": N_CATALOG})
    wide, half = make_index("wide.idx"), make_index("half.idx", dtype="float16")
    FolderStore(wide).search(queries(real_vectors), 10, mode="auto")
    FolderStore(half).search(queries(real_vectors), 10, mode="auto")
    assert not (tmp_path / "wide.idx" / "ann").exists()
    assert (tmp_path / "half.idx" / "ann" / "manifest.json").is_file()


def test_store_locations_match_vectors_order(make_index, real_vectors):
    index = make_index()
    index.remove(["item010.jpg"])
    index.add(real_vectors[10:11] * 0 + real_vectors[11:12], [ItemInfo("item000.jpg")])  # replaced: moves
    gen, ids, segs, rows = index.locations()
    all_ids, matrix = index.vectors()
    assert gen == index.generation and ids == all_ids
    got = np.stack([index.segment(s)[r] for s, r in zip(segs, rows)])
    np.testing.assert_array_equal(got, matrix)


def test_cli_search_mode_ann_and_info(tmp_path, catalog, capsys, monkeypatch):
    idx = tmp_path / "c.idx"
    assert main(["index", str(catalog), "--index", str(idx), "--no-progress"]) == 0
    query = next(iter(sorted(catalog.rglob("*.png"))))
    capsys.readouterr()
    out = {}
    for mode in ("exact", "ann"):
        assert main(["search", str(query), "--index", str(idx), "--mode", mode, "--ef", "8", "--json"]) == 0
        out[mode] = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in out["ann"][0]["results"]] == [r["id"] for r in out["exact"][0]["results"]]
    assert main(["info", "--index", str(idx)]) == 0
    text = capsys.readouterr().out
    assert "ann graph:" in text and "bytes/image" in text and "in step" in text
    assert main(["info", "--index", str(idx), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ann"]["images"] == 12
    # auto mode on a catalogue below the threshold answers like exact search
    monkeypatch.setenv("JIANSUO_ANN_THRESHOLD", "1000")
    assert main(["search", str(query), "--index", str(idx), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["results"] == out["exact"][0]["results"]
