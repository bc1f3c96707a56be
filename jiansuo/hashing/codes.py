"""Binary codes: packing K bits into bytes, and Hamming distances by popcount.

Codes are stored packed, ``ceil(K/8)`` bytes per image (``np.packbits`` order: the first bit is the
most significant bit of the first byte). For scanning, :class:`CodeTable` keeps them as 64-bit words
laid out column by column, so a query's distances to N codes are ``K/64`` XOR + popcount passes over
contiguous memory (about 1 ms per million 64-bit words on this machine, as fast as FAISS's
``IndexBinaryFlat``; see ``bench/hashing.py``).
"""

from __future__ import annotations

import numpy as np


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, K) array of 0/1 (or bool) → (N, ceil(K/8)) uint8 packed codes."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"expected a (N, K) bit array, got shape {bits.shape}")
    return np.packbits(bits.astype(bool), axis=1)


def unpack_bits(codes: np.ndarray, nbits: int) -> np.ndarray:
    """(N, ceil(K/8)) packed codes → (N, K) uint8 array of 0/1."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, count=nbits)


def to_words(codes: np.ndarray) -> np.ndarray:
    """Packed codes (N, B) → (W, N) uint64 words, zero-padded to whole words, one row per word."""
    codes = np.asarray(codes, dtype=np.uint8)
    n, nbytes = codes.shape
    nwords = max(1, -(-nbytes // 8))
    padded = np.zeros((n, nwords * 8), dtype=np.uint8)
    padded[:, :nbytes] = codes
    return np.ascontiguousarray(padded.view(np.uint64).T)


def hamming_distances(query_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(Q, N) Hamming distances between packed ``query_codes`` (Q, B) and packed ``codes`` (N, B)."""
    table = CodeTable(codes)
    return np.stack([table.distances(q) for q in np.atleast_2d(query_codes)]) if len(table) else \
        np.zeros((len(np.atleast_2d(query_codes)), 0), dtype=np.uint16)


class CodeTable:
    """Packed codes of a database, laid out for fast exhaustive Hamming scans."""

    def __init__(self, codes: np.ndarray):
        codes = np.asarray(codes, dtype=np.uint8)
        if codes.ndim != 2:
            raise ValueError(f"expected packed codes of shape (N, B), got {codes.shape}")
        self.nbytes = codes.shape[1]
        self.words = to_words(codes)
        # uint8 sums overflow past 255 bits; wider codes count in uint16.
        self._dtype = np.uint8 if self.nbytes * 8 <= 255 else np.uint16

    def __len__(self) -> int:
        return self.words.shape[1]

    def distances(self, query_code: np.ndarray) -> np.ndarray:
        """Hamming distances (N,) from one packed code (B,) to every code in the table."""
        q = to_words(np.asarray(query_code, dtype=np.uint8).reshape(1, -1))[:, 0]
        if len(q) != self.words.shape[0]:
            raise ValueError(f"query code has {np.asarray(query_code).size} bytes, table codes have {self.nbytes}")
        buf = np.empty(len(self), dtype=np.uint64)
        dist = np.bitwise_count(np.bitwise_xor(self.words[0], q[0], out=buf)).astype(self._dtype, copy=False)
        for w in range(1, len(q)):
            dist += np.bitwise_count(np.bitwise_xor(self.words[w], q[w], out=buf))
        return dist


def within_radius(dist: np.ndarray, min_count: int, max_radius: int | None = None) -> tuple[np.ndarray, int]:
    """Rows whose distance is at most the smallest radius that holds ``min_count`` rows; returns (rows, radius).

    This is the coarse step of coarse-to-fine search: Hamming balls around the query grow one bit at a
    time until enough candidates are in. With ``max_radius`` the ball stops growing there even if it
    holds fewer rows. Rows come back sorted by (distance, row).
    """
    n = len(dist)
    if n == 0 or min_count <= 0:
        return np.zeros(0, dtype=np.int64), 0
    counts = np.cumsum(np.bincount(dist, minlength=1))
    radius = int(np.searchsorted(counts, min(min_count, n)))
    if max_radius is not None:
        radius = min(radius, max_radius)
    rows = np.flatnonzero(dist <= radius)
    return rows[np.argsort(dist[rows], kind="stable")], radius
