"""The hash layer and its codes inside an index folder, kept in step with the index's rows.

Files added to ``catalog.idx/``::

    hash-layer.npz      the trained layer (see :class:`~jiansuo.hashing.layer.HashLayer`); its
                        description is also stored in the index metadata under ``hash`` (for ``info``)
    hash-codes.npz      cache: per image id, its packed code, its re-rank feature (float16) and a
                        signature of the stored vector the code was computed from

Codes are derived data: they are recomputed from the stored vectors whenever the cache does not
match. On each index generation only rows that are new or whose stored vector changed are encoded
again (the signature, two fixed random projections of the vector, tells), so images added or
re-embedded after training get their codes on the next search, and removed ones drop out.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..index.store import IndexError_
from .codes import CodeTable
from .layer import HashLayer

LAYER_FILE = "hash-layer.npz"
CODES_FILE = "hash-codes.npz"
META_KEY = "hash"

# A stored vector whose signature moved by more than this was re-embedded: its code is recomputed.
_SIGNATURE_TOLERANCE = 1e-3


class NoHashLayer(IndexError_):
    """The index has no trained hash layer (train one with ``jiansuo train-hash``)."""


@dataclass
class IndexCodes:
    """Codes of every live image, aligned with ``index.vectors()`` rows."""

    ids: list[str]
    codes: np.ndarray               # (N, B) uint8 packed
    rerank: np.ndarray | None       # (N, D) float16 L2-normalised, or None: re-rank by the stored vectors
    table: CodeTable
    layer: HashLayer
    generation: int
    encoded: int                    # rows encoded by the call that built this (0 when all came from cache)


# ---------------------------------------------------------------------------- the layer


def save_layer(index, layer: HashLayer) -> None:
    """Store ``layer`` in the index (replacing any earlier one) and describe it in the metadata."""
    if layer.input_dim != index.dim:
        raise ValueError(f"hash layer expects {layer.input_dim}-d features but the index holds {index.dim}-d")
    with index.writing():
        layer.save(index.path / LAYER_FILE)
        (index.path / CODES_FILE).unlink(missing_ok=True)
        index.set_meta(META_KEY, json.dumps(describe(layer), sort_keys=True))
    _MEMORY.pop(index, None)


def describe(layer: HashLayer) -> dict:
    """What ``jiansuo info`` shows about a layer (JSON-serialisable)."""
    info = {k: v for k, v in layer.info.items() if k != "classes"}
    if "classes" in layer.info:
        info["classes"] = len(layer.info["classes"])
    return {"kind": layer.kind, "bits": layer.bits, "fingerprint": layer.fingerprint(), **info}


def hash_info(index) -> dict | None:
    """The stored layer's description, or None when the index has no hash layer."""
    raw = index.meta().get(META_KEY)
    return json.loads(raw) if raw and (index.path / LAYER_FILE).is_file() else None


def info_lines(index) -> list[str]:
    """Lines ``jiansuo info`` prints about the hash layer and whether its codes are in step."""
    info = hash_info(index)
    if info is None:
        return ["hash layer: none (train one with `jiansuo train-hash`, then search with --mode hash)"]
    what = f"{info['kind']} {info['bits']} bits"
    if info["kind"] == "supervised":
        hidden = "x".join(map(str, info.get("hidden", []))) or "none"
        what += f", {info.get('classes')} labels, hidden {hidden}, {info.get('epochs')} epochs"
    what += f", trained on {info.get('trained_on')} images"
    if info.get("train_seconds") is not None:
        what += f" in {info['train_seconds']:.0f} s"
    try:
        with np.load(index.path / CODES_FILE, allow_pickle=False) as z:
            in_step = str(z["fingerprint"]) == info["fingerprint"] and int(z["generation"]) == index.generation
    except (OSError, ValueError, KeyError):
        in_step = False
    codes = "in step" if in_step else "behind the index (brought up to date on the next hash search)"
    return [f"hash layer: {what}", f"hash codes: {-(-info['bits'] // 8)} bytes/image, re-rank by "
            f"{info.get('rerank')} feature; {codes}"]


def load_layer(index) -> HashLayer:
    """The index's trained layer; raises :class:`NoHashLayer` when there is none."""
    path = index.path / LAYER_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NoHashLayer(
            f"index {index.path} has no hash layer: train one with "
            f"`jiansuo train-hash LABELLED/ --index {index.path}` (or --unsupervised)"
        ) from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key not in _LAYERS:
            _LAYERS.clear()
            _LAYERS[key] = HashLayer.load(path)
        return _LAYERS[key]


def remove_layer(index) -> None:
    """Forget the hash layer and its codes."""
    with index.writing():
        (index.path / LAYER_FILE).unlink(missing_ok=True)
        (index.path / CODES_FILE).unlink(missing_ok=True)
        index.set_meta(META_KEY, "")
    _MEMORY.pop(index, None)


# ---------------------------------------------------------------------------- the codes


def index_codes(index) -> IndexCodes:
    """Codes of the index's current rows: from memory, else the on-disk cache, encoding what is missing."""
    layer = load_layer(index)
    generation = index.generation
    with _LOCK:
        cached = _MEMORY.get(index)
    if cached is not None and cached.generation == generation and cached.layer is layer:
        return cached
    ids, matrix = index.vectors()
    fingerprint = layer.fingerprint()
    sig = _signature(matrix)
    nbytes = -(-layer.bits // 8)
    codes = np.zeros((len(ids), nbytes), dtype=np.uint8)
    rerank = None
    todo = np.ones(len(ids), dtype=bool)

    old = _read_cache(index.path / CODES_FILE, fingerprint)
    if old is not None:
        pos = {i: n for n, i in enumerate(old["ids"].tolist())}
        src = np.array([pos.get(i, -1) for i in ids], dtype=np.int64)
        hit = src >= 0
        hit[hit] = np.all(np.abs(old["sig"][src[hit]] - sig[hit]) <= _SIGNATURE_TOLERANCE, axis=1)
        codes[hit] = old["codes"][src[hit]]
        if "rerank" in old:
            rerank = np.zeros((len(ids), old["rerank"].shape[1]), dtype=np.float16)
            rerank[hit] = old["rerank"][src[hit]]
        todo = ~hit

    rows = np.flatnonzero(todo)
    if len(rows):
        new_codes, new_feats = layer.encode(matrix[rows])
        codes[rows] = new_codes
        if new_feats is not None:
            if rerank is None:
                rerank = np.zeros((len(ids), new_feats.shape[1]), dtype=np.float16)
            rerank[rows] = new_feats.astype(np.float16)
    if len(rows) or old is None or len(old["ids"]) != len(ids) or int(old.get("generation", -1)) != generation:
        _write_cache(index.path / CODES_FILE, fingerprint, generation, ids, sig, codes, rerank)

    result = IndexCodes(ids, codes, rerank, CodeTable(codes), layer, generation, int(len(rows)))
    with _LOCK:
        _MEMORY[index] = result
    return result


def _signature(matrix: np.ndarray) -> np.ndarray:
    """(N, 2) float32: two fixed ±1 projections of each stored vector, to notice a re-embedded image."""
    probe = np.random.default_rng(20150607).choice(np.float32([-1.0, 1.0]), size=(matrix.shape[1], 2))
    out = np.empty((len(matrix), 2), dtype=np.float32)
    for s in range(0, len(matrix), 65536):
        out[s : s + 65536] = matrix[s : s + 65536].astype(np.float32) @ probe
    return out


def _read_cache(path: Path, fingerprint: str) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            return {k: z[k] for k in z.files}
    except (FileNotFoundError, OSError, ValueError, KeyError):
        return None  # a missing, stale or damaged cache is simply rebuilt


def _write_cache(path: Path, fingerprint: str, generation: int, ids: list[str], sig: np.ndarray,
                 codes: np.ndarray, rerank: np.ndarray | None) -> None:
    # Readers may write the cache concurrently: each writes its own temp file, the last rename wins,
    # and every version is complete and consistent.
    arrays = {"fingerprint": np.array(fingerprint), "generation": np.array(generation), "ids": np.array(ids, dtype=str), "sig": sig, "codes": codes}
    if rerank is not None:
        arrays["rerank"] = rerank
    try:
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    except OSError:
        pass  # a read-only index still searches; it just re-encodes next time


_LOCK = threading.Lock()
_LAYERS: dict[tuple, HashLayer] = {}
_MEMORY: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
