"""The approximate-nearest-neighbour graph kept beside an index, in step with it and persisted in it.

Layout inside ``catalog.idx/``::

    ann/manifest.json      the commit point: parameters, the index generation the snapshot reflects,
                           and the names of the two files below (renamed into place atomically)
    ann/graph-<n>.hnsw     hnswlib HNSW graph over the (PCA-projected) vectors; labels are slots
    ann/state-<n>.npz      per label: image id, segment and row of its vector, a digest of the vector;
                           and the PCA projection
    ann/write.lock         held while a snapshot is written

Why this shape: the index (:mod:`.store`) stays the only source of truth and knows nothing about
the graph. Whoever searches compares the index's generation with the graph's; when they differ it
asks the index where every live vector is (:meth:`Index.locations`) and applies the difference
incrementally: new ids are inserted, removed ids marked deleted (their labels are reused by later
inserts, so deletions never need a rebuild), rows that moved because of compaction are recognised
by their digest and only relocated. Small differences are not written back at once (rewriting a
1M-image graph takes seconds); a later process re-applies them in milliseconds, and the snapshot is
rewritten once enough changes pile up or when indexing asks for it (``ensure(persist=True)``).

Memory: the graph holds ``reduce_dim``-d float32 projections (192-d by default, from 1280-d), found
by an uncentred PCA so that inner products, hence cosine ranks, are kept; searchers re-rank the
graph's candidates with the exact stored vectors, read through memory maps, so the full-dimension
matrix is never loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import atomic_path, atomic_write, is_temporary
from .store import Index

FORMAT = 1
ANN_DIR = "ann"
MANIFEST = "manifest.json"

#: Graph parameters: links per node, construction beam width, dimension after PCA.
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 100
DEFAULT_REDUCE_DIM = 192
#: PCA needs enough vectors to find the subspace; below this the graph keeps full dimensions.
PCA_MIN_VECTORS = 10_000
#: Vectors sampled to fit the PCA; until a fit used this many, the graph is rebuilt each time the
#: index grows 4× (a geometric schedule, so rebuilds cost at most ~1/3 of the final build in total).
PCA_SAMPLE = 100_000
_GROWTH_REBUILD = 4
#: Vectors read, digested and inserted per step while syncing (bounds memory during a build).
_CHUNK = 20_000
#: Changes applied in memory before a searcher writes the snapshot back (also ≥ 1 % of the graph).
_PERSIST_MIN_CHANGES = 1_000


@dataclass
class Params:
    """What a graph was built with; stored in the manifest."""

    M: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    reduce_dim: int = DEFAULT_REDUCE_DIM


@dataclass
class AnnGraph:
    """An HNSW graph over an index's vectors plus the label bookkeeping that ties it to the index."""

    index_identity: dict
    params: Params
    dim: int  # dimension in the graph (reduce_dim with PCA, else the index's)
    pca: np.ndarray | None  # (index dim, dim) float32 projection, or None
    pca_trained_on: int
    hnsw: object  # hnswlib.Index
    ids: list  # label -> id, None for a free label
    seg_code: np.ndarray  # label -> position in seg_names (-1 for free)
    rows: np.ndarray  # label -> row in its segment
    digest: np.ndarray  # label -> uint64 digest of the stored vector bytes
    seg_names: list[str]
    generation: int = -1  # index generation the graph reflects
    snapshot: str | None = None  # manifest "files" entry this state was loaded from / saved as
    changes: int = 0  # changes applied since the snapshot
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _id_label: dict = field(default_factory=dict, repr=False)
    _free: list = field(default_factory=list, repr=False)
    _maps: dict = field(default_factory=dict, repr=False)
    _order: np.ndarray | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- sizes

    @property
    def capacity(self) -> int:
        return len(self.ids)

    @property
    def alive(self) -> int:
        return len(self._id_label)

    def label_of(self, item_id: str) -> int | None:
        return self._id_label.get(item_id)

    # ----------------------------------------------------------------- vectors

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Index-space vectors → graph-space float32 vectors."""
        v = np.asarray(vectors, dtype=np.float32)
        if self.pca is None:
            return np.ascontiguousarray(v)
        if len(v) <= 256:
            # Query batches row by row: a one-thread matrix-vector product per query is ~10x faster than
            # a multi-threaded matrix product whose threads wait for cores other processes keep busy.
            return np.stack([row @ self.pca for row in v])
        return v @ self.pca

    def read_vectors(self, index: Index, labels: np.ndarray) -> np.ndarray:
        """Exact stored vectors (float32) of ``labels``, read through memory maps of the index's segments."""
        labels = np.asarray(labels, dtype=np.int64).ravel()
        out = np.empty((len(labels), index.dim), dtype=np.float32)
        if len(labels) == 0:
            return out
        codes, rows = self.seg_code[labels], self.rows[labels]
        order = np.lexsort((rows, codes))  # segment by segment, each front to back
        sorted_codes = codes[order]
        for group in np.split(order, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1):
            out[group] = self._segment_map(index, int(codes[group[0]]))[rows[group]]
        return out

    def order_labels(self) -> np.ndarray:
        """Labels of live images in :meth:`Index.vectors` row order (what an ``allowed`` mask refers to)."""
        if self._order is None:
            live = np.flatnonzero(self.seg_code >= 0)
            name_rank = np.argsort(np.argsort(np.array(self.seg_names, dtype=object)))
            self._order = live[np.lexsort((self.rows[live], name_rank[self.seg_code[live]]))]
        return self._order

    def _segment_map(self, index: Index, code: int) -> np.ndarray:
        mm = self._maps.get(code)
        if mm is None:  # a plain ndarray view of the map: memmap's own indexing is slower
            mm = self._maps[code] = index.segment(self.seg_names[code]).view(np.ndarray)
        return mm

    # ----------------------------------------------------------------- keeping in step

    def sync(self, index: Index, progress: bool = False) -> int:
        """Apply whatever changed in ``index`` since :attr:`generation`; returns how many labels changed."""
        if index.generation == self.generation:  # nothing to read
            return 0
        for attempt in range(3):
            gen, ids, segs, rows = index.locations()
            if gen == self.generation:
                return 0
            try:
                n = self._apply(index, gen, ids, segs, rows, progress)
            except FileNotFoundError:
                # A segment was compacted away between locations() and reading it: look again.
                self._maps.clear()
                if attempt == 2:
                    raise
                continue
            return n
        return 0  # pragma: no cover

    def _apply(self, index: Index, gen: int, ids: list[str], segs: list[str], rows: np.ndarray,
               progress: bool) -> int:
        self._maps.clear()
        self._order = None
        code_of = {name: c for c, name in enumerate(self.seg_names)}
        for name in dict.fromkeys(segs):
            if name not in code_of:
                code_of[name] = len(self.seg_names)
                self.seg_names.append(name)
        cur_code = np.fromiter((code_of[s] for s in segs), np.int32, len(segs))
        cur_label = np.fromiter((self._id_label.get(i, -1) for i in ids), np.int64, len(ids))

        # Gone: live labels whose id is no longer in the index.
        seen = np.zeros(self.capacity, dtype=bool)
        seen[cur_label[cur_label >= 0]] = True
        gone = np.flatnonzero((self.seg_code >= 0) & ~seen)
        for label in gone.tolist():
            self.hnsw.mark_deleted(label)
            del self._id_label[self.ids[label]]
            self.ids[label] = None
            self.seg_code[label] = -1
        self._free.extend(gone.tolist())

        # New or moved: new ids, and known ids whose vector now lives elsewhere (replaced or compacted).
        known = cur_label >= 0
        moved = np.zeros(len(ids), dtype=bool)
        moved[known] = (self.seg_code[cur_label[known]] != cur_code[known]) | (self.rows[cur_label[known]] != rows[known])
        self._reserve(int((~known).sum()))
        todo = np.flatnonzero(~known | moved)
        changed = len(gone)
        bar = _progress(len(todo), progress)
        for start in range(0, len(todo), _CHUNK):
            pos = todo[start : start + _CHUNK]
            vecs = _read_positions(index, [segs[p] for p in pos], rows[pos])
            digests = _digests(vecs)
            labels = cur_label[pos].copy()
            # A moved row with an unchanged digest was only compacted: relocate, keep the graph node.
            insert = np.ones(len(pos), dtype=bool)
            old = labels >= 0
            insert[old] = self.digest[labels[old]] != digests[old]
            for p in np.flatnonzero(~old):
                labels[p] = self._take_label(ids[pos[p]])
            if insert.any():
                # hnswlib inserts unknown labels and updates known (also deleted, reused) ones in place.
                self.hnsw.add_items(self.project(vecs[insert]), labels[insert])
                changed += int(insert.sum())
            self.seg_code[labels] = cur_code[pos]
            self.rows[labels] = rows[pos]
            self.digest[labels] = digests
            if bar is not None:
                bar.update(len(pos))
        if bar is not None:
            bar.close()
        self.generation = gen
        self.changes += changed
        return changed

    def _reserve(self, n_new: int) -> None:
        """Make room for ``n_new`` more ids: free labels first, then new slots (graph resized geometrically)."""
        extra = n_new - len(self._free)
        if extra <= 0:
            return
        cap = self.capacity
        self.ids.extend([None] * extra)
        self.seg_code = np.concatenate([self.seg_code, np.full(extra, -1, np.int32)])
        self.rows = np.concatenate([self.rows, np.zeros(extra, np.int64)])
        self.digest = np.concatenate([self.digest, np.zeros(extra, np.uint64)])
        self._free.extend(range(cap + extra - 1, cap - 1, -1))  # popped from the end: lowest first
        if self.capacity > self.hnsw.get_max_elements():
            self.hnsw.resize_index(max(self.capacity, int(self.hnsw.get_max_elements() * 1.5)))

    def _take_label(self, item_id: str) -> int:
        label = self._free.pop()
        self.ids[label] = item_id
        self._id_label[item_id] = label
        return label

    def needs_rebuild(self, index_dim: int) -> bool:
        """True when a fresh build would serve better: PCA now possible or under-trained, or mostly free slots."""
        n = self.alive
        if index_dim > self.params.reduce_dim and n >= PCA_MIN_VECTORS:
            if self.pca is None:
                return True
            if self.pca_trained_on < PCA_SAMPLE and n >= _GROWTH_REBUILD * self.pca_trained_on:
                return True
        return self.capacity > 10_000 and len(self._free) > 0.5 * self.capacity

    def _reindex(self) -> None:
        self._id_label = {i: n for n, i in enumerate(self.ids) if i is not None}
        self._free = [n for n, i in enumerate(self.ids) if i is None]


# --------------------------------------------------------------------------- building


def build(index: Index, params: Params | None = None, progress: bool = False) -> AnnGraph:
    """A new graph over every live vector of ``index`` (PCA fitted first when the index is large enough)."""
    import hnswlib

    params = params or Params()
    gen, ids, segs, rows = index.locations()
    pca = None
    if index.dim > params.reduce_dim and len(ids) >= PCA_MIN_VECTORS:
        pca = fit_pca(index, segs, rows, params.reduce_dim)
    dim = pca.shape[1] if pca is not None else index.dim
    hnsw = hnswlib.Index(space="ip", dim=dim)
    hnsw.init_index(max_elements=max(1024, int(len(ids) * 1.05)), M=params.M,
                    ef_construction=params.ef_construction, random_seed=100)
    graph = AnnGraph(index_identity=identity(index), params=params, dim=dim, pca=pca,
                     pca_trained_on=min(len(ids), PCA_SAMPLE) if pca is not None else 0, hnsw=hnsw,
                     ids=[], seg_code=np.empty(0, np.int32), rows=np.empty(0, np.int64),
                     digest=np.empty(0, np.uint64), seg_names=[])
    graph.sync(index, progress=progress)
    return graph


def fit_pca(index: Index, segs: list[str], rows: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """Top ``dim`` eigenvectors of the (uncentred) second-moment matrix of a sample of the index's vectors.

    Uncentred, because search ranks by inner product: projecting onto the directions that carry
    most of E[x xᵀ] keeps q·x best; centring would drop the shared mean direction that every
    feature vector has and bias scores by item.
    """
    n = len(segs)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n, PCA_SAMPLE), replace=False))
    gram = np.zeros((index.dim, index.dim), dtype=np.float64)
    for start in range(0, len(pick), _CHUNK):
        pos = pick[start : start + _CHUNK]
        x = _read_positions(index, [segs[p] for p in pos], rows[pos])
        gram += (x.T @ x).astype(np.float64)
    _, vecs = np.linalg.eigh(gram)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dim].astype(np.float32))


def identity(index: Index, meta: dict | None = None) -> dict:
    """What ties a graph to one index: a graph copied from, or left by, another index is rebuilt.

    The index gets a random ``uuid`` meta value the first time (creation times have one-second
    resolution, and a folder deleted and re-created at the same path must not inherit the graph).
    """
    meta = meta or index.meta()
    if "uuid" not in meta:
        index.set_meta("uuid", uuid.uuid4().hex)
        meta = index.meta()
    return {"uuid": meta["uuid"], "model": index.model.get("name"), "version": index.model.get("version"),
            "dim": index.dim, "dtype": index.dtype.name}


# --------------------------------------------------------------------------- persistence


def ann_dir(index: Index) -> Path:
    return Path(index.path) / ANN_DIR


def read_manifest(index: Index) -> dict | None:
    """The current snapshot's manifest, or None when the index has no (readable) ANN graph."""
    try:
        manifest = json.loads((ann_dir(index) / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable ANN manifest in {ann_dir(index)} ({exc}); the graph will be rebuilt")
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def load(index: Index) -> AnnGraph | None:
    """The persisted graph of ``index`` as it was saved (not yet synced); None if absent, foreign or unreadable.

    The graph is derived data: anything wrong with it means "build it again", never a lost index.
    """
    for attempt in range(3):
        manifest = read_manifest(index)
        if manifest is None or manifest.get("identity") != identity(index):
            return None
        try:
            return _load_snapshot(index, manifest)
        except FileNotFoundError:
            continue  # a writer replaced the snapshot between reading the manifest and its files
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            warnings.warn(f"ignoring unreadable ANN graph in {ann_dir(index)} ({exc}); it will be rebuilt")
            return None
    return None


def _load_snapshot(index: Index, manifest: dict) -> AnnGraph:
    import hnswlib

    folder = ann_dir(index)
    files = manifest["files"]
    with np.load(folder / files["state"], allow_pickle=False) as z:
        ids = json.loads(z["ids"].tobytes().decode())
        seg_names = json.loads(z["seg_names"].tobytes().decode())
        state = {k: z[k] for k in ("seg_code", "rows", "digest", "pca")}
    dim = int(manifest["graph_dim"])
    hnsw = hnswlib.Index(space="ip", dim=dim)
    hnsw.load_index(str(folder / files["graph"]), max_elements=max(1024, len(ids)))
    pca = state["pca"] if state["pca"].size else None
    graph = AnnGraph(index_identity=manifest["identity"], params=Params(**manifest["params"]), dim=dim, pca=pca,
                     pca_trained_on=int(manifest["pca_trained_on"]), hnsw=hnsw, ids=ids,
                     seg_code=state["seg_code"].astype(np.int32), rows=state["rows"].astype(np.int64),
                     digest=state["digest"].astype(np.uint64), seg_names=seg_names,
                     generation=int(manifest["generation"]), snapshot=files["graph"])
    graph._reindex()
    return graph


def save(index: Index, graph: AnnGraph) -> bool:
    """Write ``graph`` as the index's new snapshot (atomically); False when a newer one is already there."""
    folder = ann_dir(index)
    folder.mkdir(exist_ok=True)
    with graph.lock, _locked(folder / "write.lock"):
        current = read_manifest(index)
        if (current is not None and current.get("identity") == graph.index_identity
                and current["files"]["graph"] != graph.snapshot and int(current["generation"]) >= graph.generation):
            return False  # another process saved a state at least as new while we worked
        seq = int(current.get("seq", 0)) + 1 if current else 1
        files = {"graph": f"graph-{seq:06d}.hnsw", "state": f"state-{seq:06d}.npz"}
        with atomic_path(folder / files["graph"], durable=True) as tmp_graph:
            graph.hnsw.save_index(str(tmp_graph))
        buf = io.BytesIO()
        np.savez(buf, ids=np.frombuffer(json.dumps(graph.ids).encode(), np.uint8),
                 seg_names=np.frombuffer(json.dumps(graph.seg_names).encode(), np.uint8),
                 seg_code=graph.seg_code, rows=graph.rows, digest=graph.digest,
                 pca=graph.pca if graph.pca is not None else np.zeros((0, 0), np.float32))
        atomic_write(folder / files["state"], buf.getvalue(), durable=True)
        manifest = {
            "format": FORMAT, "seq": seq, "engine": f"hnswlib {_hnswlib_version()}", "identity": graph.index_identity,
            "generation": graph.generation, "params": vars(graph.params), "graph_dim": graph.dim,
            "pca_trained_on": graph.pca_trained_on, "alive": graph.alive, "capacity": graph.capacity,
            "files": files,
        }
        atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1), durable=True)
        for f in folder.iterdir():
            if (f.name.startswith(("graph-", "state-")) and f.name not in files.values()) or is_temporary(f.name):
                f.unlink(missing_ok=True)
        graph.snapshot, graph.changes = files["graph"], 0
        return True


# --------------------------------------------------------------------------- the entry points


# One graph per index folder per process: a server loads it once and keeps it in step.
_OPEN: dict[str, AnnGraph] = {}
_OPEN_LOCK = threading.Lock()


def ensure(index: Index, *, persist: bool | None = None, progress: bool = False,
           params: Params | None = None) -> AnnGraph:
    """The graph of ``index``, up to date with its latest commit: cached, else loaded, else built.

    ``persist``: True writes the snapshot whenever it changed, False never, None (searchers) when a
    fresh build happened or enough changes piled up since the last snapshot.
    """
    key = os.path.abspath(index.path)
    meta = index.meta()  # one query answers both "same index?" and "anything new?"
    graph = _OPEN.get(key)
    if (graph is not None and persist is None and params is None and graph.generation == int(meta["generation"])
            and graph.index_identity == identity(index, meta)):
        return graph  # the usual case for a searcher: nothing changed since the last query
    with _OPEN_LOCK:
        graph = _OPEN.get(key)
        if graph is not None and graph.index_identity != identity(index):
            graph = None
        if graph is None:
            graph = load(index)
        built = False
        if graph is None or (params is not None and vars(params) != vars(graph.params)):
            graph, built = build(index, params, progress=progress), True
        else:
            with graph.lock:
                graph.sync(index, progress=progress)
            if graph.needs_rebuild(index.dim):
                graph, built = build(index, graph.params, progress=progress), True
        _OPEN[key] = graph
    with graph.lock:
        big = graph.changes >= max(_PERSIST_MIN_CHANGES, graph.alive // 100)
        if graph.changes or built:
            if persist or (persist is None and (built or big)):
                save(index, graph)
    return graph


def forget(index: Index) -> None:
    """Drop this process's cached graph of ``index`` (tests; a server reloading from disk)."""
    with _OPEN_LOCK:
        _OPEN.pop(os.path.abspath(index.path), None)


def bytes_per_image(dim: int, M: int) -> int:
    """Memory one image costs in an hnswlib graph plus this module's bookkeeping (approximate).

    hnswlib per element: level-0 links (2M ints + count) + vector + label, a per-element mutex,
    level and link-list pointer, the label hash map entry and, for 1/ln(M) of elements, upper links.
    Bookkeeping: segment code, row and digest arrays, and the id string in the label maps.
    """
    level0 = (2 * M + 1) * 4 + dim * 4 + 8
    per_element = level0 + 40 + 4 + 8 + 48 + int((M + 1) * 4 / max(np.log(M), 1.0))
    return per_element + 4 + 8 + 8 + 120


def info(index: Index) -> dict | None:
    """What ``jiansuo info`` reports about the graph, from the manifest alone (nothing is loaded)."""
    manifest = read_manifest(index)
    if manifest is None:
        return None
    folder = ann_dir(index)
    disk = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    dim, M = int(manifest["graph_dim"]), int(manifest["params"]["M"])
    return {
        "engine": manifest["engine"], "M": M, "ef_construction": manifest["params"]["ef_construction"],
        "graph_dim": dim, "index_dim": index.dim, "pca": dim != index.dim,
        "images": manifest["alive"], "generation": manifest["generation"],
        "in_step": manifest["identity"] == identity(index) and int(manifest["generation"]) == index.generation,
        "bytes_per_image_in_memory": bytes_per_image(dim, M), "bytes_on_disk": disk,
    }


# --------------------------------------------------------------------------- helpers


def _read_positions(index: Index, segs: list[str], rows: np.ndarray) -> np.ndarray:
    """float32 vectors at (segment, row) pairs, in the given order."""
    out = np.empty((len(segs), index.dim), dtype=np.float32)
    by_seg: dict[str, list[int]] = {}
    for n, s in enumerate(segs):
        by_seg.setdefault(s, []).append(n)
    for name, where in by_seg.items():
        where = np.asarray(where)
        out[where] = index.segment(name)[rows[where]]
    return out


def _digests(vectors_f32: np.ndarray) -> np.ndarray:
    """uint64 digest per row; computed on float32 values, so float16 storage digests the same after compaction."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in vectors_f32),
        np.uint64, len(vectors_f32),
    )


def _progress(total: int, enabled: bool):
    if not enabled or total < _CHUNK:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="ANN graph", unit="img", file=sys.stderr)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _hnswlib_version() -> str:
    try:
        from importlib.metadata import version

        return version("hnswlib")
    except Exception:  # pragma: no cover
        return "?"
