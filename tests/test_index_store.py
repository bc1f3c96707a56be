"""The on-disk index: atomic commits, incremental updates, compaction, crash leftovers, model checks."""

from __future__ import annotations

import numpy as np
import pytest

from jiansuo.features import l2_normalize
from jiansuo.index import Index, IndexError_, ItemInfo, store
from jiansuo.search.folder import FolderStore

MODEL = {"name": "test-model", "version": "1", "dim": 8, "input_size": 4, "preprocessing": "none"}


def vecs(n: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, 8)))


def infos(names):
    return [ItemInfo(n, size=1, mtime_ns=2, sha256="ab") for n in names]


def test_add_replace_remove_and_reopen(tmp_path):
    path = tmp_path / "c.idx"
    idx = Index.create(path, MODEL)
    v = vecs(3)
    idx.add(v, infos(["a", "b", "c"]))
    new_b = vecs(1, seed=5)
    idx.add(new_b, infos(["b"]))  # replace
    assert idx.remove(["a", "zzz"]) == 1
    idx.close()
    idx = Index.open(path)
    ids, m = idx.vectors()
    assert sorted(ids) == ["b", "c"] and len(idx) == 2
    np.testing.assert_allclose(idx.get_vectors(["b", "c"]), np.vstack([new_b, v[2:]]), rtol=1e-6)
    assert idx.items()["c"] == ItemInfo("c", 1, 2, "ab")


def test_generation_invalidates_cache_across_handles(tmp_path):
    path = tmp_path / "c.idx"
    writer = Index.create(path, MODEL)
    reader = Index.open(path)
    writer.add(vecs(2), infos(["a", "b"]))
    assert reader.ids() == ["a", "b"]
    writer.remove(["a"])
    assert reader.ids() == ["b"]


def test_compaction_drops_dead_rows_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_COMPACT_DEAD_SHARE", 0.35)
    idx = Index.create(tmp_path / "c.idx", MODEL)
    v = vecs(10)
    idx.add(v[:5], infos("abcde"))
    idx.add(v[5:], infos("fghij"))
    idx.remove(list("abcdefg"))  # first segment dropped whole; 2 of 5 rows dead in the second -> compaction
    assert idx.stats()["segments"] == 1 and idx.stats()["stored_rows"] == 3
    assert len(list((tmp_path / "c.idx").glob("seg-*.npy"))) == 1
    np.testing.assert_allclose(idx.get_vectors(list("hij")), v[7:], rtol=1e-6)


def test_orphan_segment_from_crashed_commit_is_removed(tmp_path):
    idx = Index.create(tmp_path / "c.idx", MODEL)
    idx.add(vecs(2), infos(["a", "b"]))
    # A crash between writing a segment file and committing its rows leaves these behind.
    np.save(tmp_path / "c.idx" / "seg-999999.npy", vecs(4))
    (tmp_path / "c.idx" / "seg-000002.npy.tmp").write_bytes(b"half")
    reopened = Index.open(tmp_path / "c.idx")
    assert len(reopened) == 2
    reopened.add(vecs(1), infos(["c"]))
    names = sorted(p.name for p in (tmp_path / "c.idx").glob("seg-*"))
    assert "seg-999999.npy" not in names and not any(n.endswith(".tmp") for n in names)
    assert len(reopened) == 3


def test_rejects_bad_batches_without_changing_the_index(tmp_path):
    idx = Index.create(tmp_path / "c.idx", MODEL)
    idx.add(vecs(1), infos(["a"]))
    with pytest.raises(IndexError_, match="shape"):
        idx.add(vecs(2), infos(["x"]))
    bad = vecs(1)
    bad[0, 0] = np.nan
    with pytest.raises(IndexError_, match="non-finite"):
        idx.add(bad, infos(["y"]))
    with pytest.raises(IndexError_, match="duplicate"):
        idx.add(vecs(2), infos(["z", "z"]))
    assert idx.ids() == ["a"]


def test_float16_storage_and_model_mismatch(tmp_path):
    idx = Index.create(tmp_path / "h.idx", MODEL, dtype="float16")
    v = vecs(4)
    idx.add(v, infos("abcd"))
    assert idx.vectors()[1].dtype == np.float16
    assert idx.stats()["bytes_per_image_in_memory"] == 16
    with pytest.raises(IndexError_, match="cannot be used with"):
        FolderStore.open(tmp_path / "h.idx", model={**MODEL, "name": "other"})
    with pytest.raises(IndexError_, match="no index"):
        Index.open(tmp_path / "missing.idx")
    with pytest.raises(IndexError_, match="already exists"):
        Index.create(tmp_path / "h.idx", MODEL)


def test_exact_search_ranks_and_filters(tmp_path):
    from jiansuo.search.folder import FolderStore

    idx = Index.create(tmp_path / "c.idx", MODEL)
    v = vecs(20)
    idx.add(v, infos([f"i{n:02d}" for n in range(20)]))
    [res] = FolderStore(idx).search(v[7], k=3)
    assert res.hits[0].id == "i07" and res.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in res.hits] == sorted([h.score for h in res.hits], reverse=True)
    assert res.candidates == 20
    mask = np.ones(20, bool)
    mask[7] = False
    [res] = FolderStore(idx).search(v[7], k=3, allowed=mask)
    assert "i07" not in [h.id for h in res.hits]
    [res] = FolderStore(idx).search(v[7], k=20, min_score=0.5)
    assert all(h.score >= 0.5 for h in res.hits) and res.hits[0].id == "i07"
    # float16 storage gives the same ranking
    idx16 = Index.create(tmp_path / "h.idx", MODEL, dtype="float16")
    idx16.add(v, infos([f"i{n:02d}" for n in range(20)]))
    [res16] = FolderStore(idx16).search(v[7], k=3)
    assert [h.id for h in res16.hits] == [h.id for h in FolderStore(idx).search(v[7], k=3)[0].hits]


def test_opening_a_half_created_index_is_a_clear_error(tmp_path):
    import sqlite3

    path = tmp_path / "c.idx"
    path.mkdir()
    with sqlite3.connect(path / store.DB_NAME) as db:  # tables exist, first rows not yet written
        db.executescript(store._SCHEMA)
    with pytest.raises(IndexError_, match="still being created"):
        Index.open(path)
