"""Hash codes and coarse-to-fine search on real Fashion-MNIST product photos and the real default model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from jiansuo.datasets import fashion_mnist
from jiansuo.hashing import store
from jiansuo.hashing.codes import (
    CodeTable,
    hamming_distances,
    pack_bits,
    unpack_bits,
    within_radius,
)
from jiansuo.hashing.itq import train_itq
from jiansuo.hashing.layer import HashLayer
from jiansuo.hashing.train import MIN_STEPS, train_supervised
from jiansuo.index import Index, ItemInfo
from jiansuo.search import hashing as hash_mode
from jiansuo.search.folder import FolderStore

# Four clearly different product kinds: trousers, sandals, bags, ankle boots.
CLASSES = [1, 5, 8, 9]
PER_CLASS_DB, PER_CLASS_Q = 50, 10


@pytest.fixture(scope="session")
def fmnist(extractor):
    """Real embeddings of 240 Fashion-MNIST training photos: (db feats, db labels, query feats, query labels)."""
    images, labels = fashion_mnist.load("train")
    picks = np.concatenate([np.flatnonzero(labels == c)[: PER_CLASS_DB + PER_CLASS_Q] for c in CLASSES])
    feats = extractor.embed_images([Image.fromarray(images[i]).convert("RGB") for i in picks], batch_size=60)
    labs = labels[picks]
    is_query = np.concatenate([np.arange(PER_CLASS_DB + PER_CLASS_Q) >= PER_CLASS_DB for _ in CLASSES])
    return feats[~is_query], labs[~is_query], feats[is_query], labs[is_query]


@pytest.fixture(scope="session")
def supervised(fmnist) -> HashLayer:
    db, labels, _, _ = fmnist
    return train_supervised(db, [fashion_mnist.CLASS_NAMES[c] for c in labels], 48, epochs=15, batch_size=64,
                            progress=False)


def make_index(path, extractor, feats, labels) -> Index:
    index = Index.create(path, extractor.describe())
    ids = [f"{fashion_mnist.CLASS_NAMES[c]}/{n:03d}.png" for n, c in enumerate(labels)]
    index.add(feats, [ItemInfo(i) for i in ids])
    return index


def test_packing_and_hamming_distance_count_differing_bits():
    rng = np.random.default_rng(0)
    for nbits in (8, 48, 64, 128, 200):
        bits = rng.integers(0, 2, (50, nbits)).astype(np.uint8)
        codes = pack_bits(bits)
        assert codes.shape == (50, -(-nbits // 8)) and codes.dtype == np.uint8
        assert np.array_equal(unpack_bits(codes, nbits), bits)
        want = (bits[:5, None, :] != bits[None, :, :]).sum(-1)
        assert np.array_equal(hamming_distances(codes[:5], codes), want)
    with pytest.raises(ValueError):
        CodeTable(codes).distances(codes[0, :3])


def test_radius_grows_until_enough_candidates():
    dist = np.array([3, 0, 5, 1, 1, 2, 7, 3, 3], dtype=np.uint8)
    for need in range(1, len(dist) + 1):
        rows, radius = within_radius(dist, need)
        assert len(rows) >= need
        assert np.all(dist[rows] <= radius)
        assert np.count_nonzero(dist <= radius - 1) < need  # the smallest radius that holds enough
        assert list(dist[rows]) == sorted(dist[rows])
    rows, radius = within_radius(dist, 5, max_radius=1)
    assert radius == 1 and sorted(rows) == [1, 3, 4]


def test_supervised_layer_separates_classes_and_codes_are_deterministic(fmnist, supervised, tmp_path):
    db, db_labels, q, q_labels = fmnist
    codes = supervised.codes(q)
    assert codes.shape == (len(q), 6)
    assert np.array_equal(codes, supervised.codes(q))
    supervised.save(tmp_path / "layer.npz")
    reloaded = HashLayer.load(tmp_path / "layer.npz")
    assert reloaded.fingerprint() == supervised.fingerprint()
    assert np.array_equal(reloaded.codes(q), codes)
    # Hamming ranking alone puts same-kind products first for held-out photos.
    dist = hamming_distances(codes, supervised.codes(db))
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :10]
    precision = np.mean(db_labels[nearest] == q_labels[:, None])
    assert precision >= 0.9, precision
    # Codes of different kinds differ by many bits, codes of one kind by few.
    same = np.mean([dist[i][db_labels == q_labels[i]].mean() for i in range(len(q))])
    other = np.mean([dist[i][db_labels != q_labels[i]].mean() for i in range(len(q))])
    assert other > 2 * same
    assert set(supervised.info["classes"]) == {fashion_mnist.CLASS_NAMES[c] for c in CLASSES}


def test_itq_needs_no_labels_and_keeps_neighbours(fmnist):
    db, _, q, _ = fmnist
    layer = train_itq(db, 32)
    codes = unpack_bits(layer.codes(db), 32)
    assert 0.2 < codes.mean() < 0.8  # balanced bits, not constant
    # Hamming neighbours hold most cosine neighbours: a 20% candidate pool keeps >= 80% of the top 5.
    dist = hamming_distances(layer.codes(q), layer.codes(db))
    exact = np.argsort(-(q @ db.T), axis=1)[:, :5]
    pool = np.argsort(dist, axis=1, kind="stable")[:, : len(db) // 5]
    recall = np.mean([len(set(e) & set(p)) / 5 for e, p in zip(exact, pool)])
    assert recall >= 0.8, recall
    with pytest.raises(ValueError, match="more images than bits"):
        train_itq(db[:20], 32)


def test_hash_search_returns_top_k_and_matches_exact_order_within_candidates(fmnist, supervised, extractor, tmp_path):
    db, labels, q, q_labels = fmnist
    index = make_index(tmp_path / "c.idx", extractor, db, labels)
    with pytest.raises(store.NoHashLayer, match="train-hash"):
        FolderStore(index).search(q[:1], 5, mode="hash")
    store.save_layer(index, supervised)
    info = store.hash_info(index)
    assert info["kind"] == "supervised" and info["bits"] == 48 and info["classes"] == 4
    results = FolderStore(index).search(q, 10, mode="hash", candidates=30)
    for r in results:
        assert len(r.hits) == 10 and r.candidates == 30
        assert [h.score for h in r.hits] == sorted((h.score for h in r.hits), reverse=True)
    precision = np.mean([h.id.split("/")[0] == fashion_mnist.CLASS_NAMES[lab]
                         for r, lab in zip(results, q_labels) for h in r.hits])
    assert precision >= 0.9, precision
    # With every image a candidate, coarse-to-fine is exhaustive search in the re-rank space.
    full = FolderStore(index).search(q[:3], 5, mode="hash", candidates=len(db))
    rerank = supervised.rerank_features(db)
    for r, qf in zip(full, supervised.rerank_features(q[:3])):
        # (re-rank features are stored as float16: compare scores, near-ties may swap places)
        assert np.allclose([h.score for h in r.hits], np.sort(rerank @ qf)[::-1][:5], atol=2e-3)
    # Hamming ranking alone, a filter, and a score threshold.
    ham = FolderStore(index).search(q[:2], 7, mode="hash", rerank=False)
    assert all(len(r.hits) == 7 and r.candidates == 7 for r in ham)
    allowed = np.array([i.startswith("Bag/") for i in index.ids()])
    filtered = FolderStore(index).search(q[:4], 60, mode="hash", allowed=allowed)
    assert all(len(r.hits) == allowed.sum() and all(h.id.startswith("Bag/") for h in r.hits) for r in filtered)
    strict = FolderStore(index).search(q[:4], 10, mode="hash", min_score=0.99)
    assert all(h.score >= 0.99 for r in strict for h in r.hits)


def test_itq_layer_reranks_by_stored_features(fmnist, extractor, tmp_path):
    db, labels, q, _ = fmnist
    index = make_index(tmp_path / "c.idx", extractor, db, labels)
    store.save_layer(index, train_itq(db, 32))
    exact = FolderStore(index).search(q, 5)
    approx = FolderStore(index).search(q, 5, mode="hash", candidates=len(db) // 4)
    recall = np.mean([len({h.id for h in a.hits} & {h.id for h in e.hits}) / 5 for a, e in zip(approx, exact)])
    assert recall >= 0.9, recall
    # Scores are the same cosine similarities exact search reports.
    for a, e in zip(approx, exact):
        common = {h.id: h.score for h in e.hits}
        assert all(abs(h.score - common[h.id]) < 1e-4 for h in a.hits if h.id in common)


def test_codes_follow_images_added_changed_and_removed_after_training(fmnist, supervised, extractor, tmp_path):
    db, labels, q, q_labels = fmnist
    index = make_index(tmp_path / "c.idx", extractor, db[:100], labels[:100])
    store.save_layer(index, supervised)
    FolderStore(index).search(q[:1], 3, mode="hash")
    assert (index.path / store.CODES_FILE).is_file()
    # New images (after training) become searchable by their own photo.
    new_ids = [f"new/{n}.png" for n in range(len(q))]
    index.add(q, [ItemInfo(i) for i in new_ids])
    results = FolderStore(index).search(q, 1, mode="hash")
    assert [r.hits[0].id for r in results] == new_ids
    state = store.index_codes(index)
    assert state.encoded == len(q)  # only the new rows were encoded, the rest came from the cache
    assert np.array_equal(state.codes[[state.ids.index(i) for i in new_ids]], supervised.codes(q))
    # A re-embedded image gets a new code; a removed one is never returned.
    index.add(db[150:151], [ItemInfo("new/0.png")])
    index.remove(["new/1.png"])
    state = store.index_codes(index)
    assert np.array_equal(state.codes[state.ids.index("new/0.png")], supervised.codes(db[150:151])[0])
    assert "new/1.png" not in state.ids
    assert all(h.id != "new/1.png" for r in FolderStore(index).search(q, 50, mode="hash") for h in r.hits)
    # A fresh process (no memory cache) reads the persisted codes without encoding anything.
    store._MEMORY.clear()
    with Index.open(index.path) as again:
        assert store.index_codes(again).encoded == 0
        assert json.loads(again.meta()["hash"])["fingerprint"] == supervised.fingerprint()


def test_layer_for_other_features_is_refused(fmnist, extractor, tmp_path):
    db, labels, _, _ = fmnist
    index = make_index(tmp_path / "c.idx", extractor, db, labels)
    with pytest.raises(ValueError, match="1280-d"):
        store.save_layer(index, train_itq(db[:, :64], 16))
    with pytest.raises(ValueError, match="two different labels"):
        train_supervised(db, ["same"] * len(db), 16, epochs=1, progress=False)
    assert hash_mode.pool_size(10, 50) == 50 and hash_mode.pool_size(10, 10_000) == 1000


@pytest.fixture
def labelled_folders(tmp_path):
    """LABELLED/<kind>/<n>.png catalogue and QUERIES/<kind>/<n>.png query folders of real Fashion-MNIST photos."""
    images, labels = fashion_mnist.load("test")
    cat, qdir = tmp_path / "LABELLED", tmp_path / "QUERIES"
    for c in CLASSES:
        name = fashion_mnist.CLASS_NAMES[c].replace("/", "-").replace(" ", "-")
        for folder, picks in ((cat, np.flatnonzero(labels == c)[:25]), (qdir, np.flatnonzero(labels == c)[25:28])):
            (folder / name).mkdir(parents=True, exist_ok=True)
            for i in picks:
                Image.fromarray(images[i]).save(folder / name / f"{i}.png")
    return cat, qdir


def test_cli_train_search_evaluate(labelled_folders, tmp_path, capsys):
    from jiansuo.cli import main

    cat, qdir = labelled_folders
    idx = str(tmp_path / "c.idx")
    assert main(["index", str(cat), "--index", idx, "--no-progress"]) == 0
    query = str(next((qdir / "Bag").iterdir()))
    capsys.readouterr()
    assert main(["search", query, "--index", idx, "--mode", "hash"]) == 1
    assert "train-hash" in capsys.readouterr().err
    assert main(["train-hash", "--index", idx]) == 1
    assert "exactly one of" in capsys.readouterr().err

    assert main(["train-hash", str(cat), "--index", idx, "--bits", "16", "--epochs", "10", "--json",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "supervised" and summary["bits"] == 16 and summary["labels"] == 4
    # A fifth of the labelled photos is held out to judge the learnt ranking (train_judged).
    assert summary["trained_on"] == 80 and summary["judged_on"] == 20 and summary["coded_images"] == 100
    # 80 photos are one batch an epoch: the 10 epochs asked for would be 10 steps; it trains MIN_STEPS.
    assert summary["epochs"] == MIN_STEPS and summary["train_accuracy"] == 1.0
    assert summary["similar_ranking"] in ("learned", "expanded") and set(summary["judgement"]) == {"plain", "expanded", "learned"}
    # Hash mode re-ranks by the learnt feature only where it beat the plain one on the held-out photos.
    judged = summary["judgement"]
    learnt_helps = judged["learned"]["map100"] >= judged["plain"]["map100"] + 0.01 and \
        judged["learned"]["p10"] >= judged["plain"]["p10"]
    assert summary["rerank"] == ("hidden" if learnt_helps else "input")
    assert main(["search", query, "--index", idx, "--mode", "hash", "--json", "-k", "5"]) == 0
    [out] = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 5 and out["candidates"] == 100  # pool default > catalogue: all examined
    assert sum(r["id"].startswith("Bag/") for r in out["results"]) >= 4
    with Index.open(idx) as index:
        assert any(line.startswith("hash layer: supervised 16 bits") for line in store.info_lines(index))

    assert main(["evaluate", "--index", idx, "--queries", str(qdir), "--map-k", "15", "-k", "5", "--json",
                 "--no-progress", "--candidates", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 12 and [r["mode"] for r in report["reports"]] == ["exact", "hash", "hamming"]
    for r in report["reports"]:
        assert 0.5 <= r["map@15"] <= 1 and 0.5 <= r["precision@5"] <= 1
    assert report["reports"][1]["mean_candidates"] == 20 and report["reports"][1]["recall@5_vs_exact"] >= 0

    # Labels from a CSV of index ids, and unsupervised codes for an unlabelled catalogue.
    csv = tmp_path / "labels.csv"
    with Index.open(idx) as index:
        csv.write_text("path,label\n" + "".join(f"{i},{i.split('/')[0]}\n" for i in index.ids()))
    assert main(["train-hash", "--labels", str(csv), "--index", idx, "--bits", "8", "--epochs", "3",
                 "--no-progress"]) == 0
    assert "supervised 8-bit hash layer on 80 images of 4 labels" in capsys.readouterr().out
    # Labelled photos that are not in the index are embedded for training.
    assert main(["train-hash", str(qdir), "--index", idx, "--bits", "8", "--epochs", "3", "--json",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["trained_on"] == 12
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nno/such.png,Bag\n")
    assert main(["train-hash", "--labels", str(bad), "--index", idx, "--no-progress"]) == 1
    assert "bad.csv:2" in capsys.readouterr().err
    assert main(["train-hash", "--unsupervised", "--index", idx, "--bits", "16", "--no-progress"]) == 0
    assert main(["evaluate", "--index", idx, "--queries", str(qdir), "--labels", str(csv), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "hamming" in text and "mAP@1000" in text
