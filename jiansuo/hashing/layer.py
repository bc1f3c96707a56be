"""A trained hash layer: stored features → K-bit codes (and the feature to re-rank candidates with).

Both kinds of layer work on the vectors the index already stores (the frozen extractor's L2-normalised
feature), so codes for images added later are computed from their stored vectors, with no second
network to run at indexing time. Inference is plain numpy; torch is only needed to train.

- ``supervised`` (Lin et al. 2015): input standardisation → ReLU hidden layer(s) → K sigmoid units;
  bit = activation > 0.5. Candidates are re-ranked by a feature of the trained network, not by the raw
  ImageNet feature (which undoes what training learnt): by default the last hidden layer, the analogue
  of fc7 of the paper's fine-tuned network. The latent activations themselves (``latent``) rank classes
  as well but saturate: photos of one kind get near-identical vectors, so the very product photographed
  is no longer found first; the hidden layer keeps that detail.
- ``itq`` (Gong & Lazebnik 2011): centre → PCA to K dims → learnt rotation; bit = value > 0.
  No labels needed; candidates are re-ranked by the stored feature itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..features.base import l2_normalize
from .codes import pack_bits

KINDS = ("supervised", "itq")
#: Spaces candidates can be re-ranked in: the layer's hidden feature, its latent activations, or the input.
RERANK_SPACES = ("hidden", "latent", "input")


@dataclass
class HashLayer:
    """Parameters of a trained layer plus a description (classes, input model, training figures)."""

    kind: str
    bits: int
    params: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown hash layer kind {self.kind!r}; expected one of {KINDS}")
        self.params = {k: np.asarray(v, dtype=np.float32) for k, v in self.params.items()}
        self.info.setdefault("rerank", "hidden" if self.kind == "supervised" and self.n_hidden else
                             "latent" if self.kind == "supervised" else "input")
        if self.info["rerank"] not in RERANK_SPACES:
            raise ValueError(f"unknown re-rank space {self.info['rerank']!r}; expected one of {RERANK_SPACES}")
        if self.info["rerank"] == "hidden" and not (self.kind == "supervised" and self.n_hidden):
            raise ValueError("re-ranking by the hidden layer needs a supervised layer with a hidden layer")

    # ------------------------------------------------------------------ inference

    @property
    def input_dim(self) -> int:
        return int(self.params["mean"].shape[0])

    def _hidden(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, dtype=np.float32) - self.params["mean"]) * self.params["scale"]
        for i in range(self.n_hidden):
            h = np.maximum(_dense(h, self.params[f"w{i}"], self.params[f"b{i}"]), 0.0)
        return h

    @property
    def n_hidden(self) -> int:
        return sum(1 for k in self.params if k.startswith("w") and k[1:].isdigit())

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if x.shape[1] != self.input_dim:
            raise ValueError(f"hash layer expects {self.input_dim}-d features, got {x.shape[1]}-d")
        return x

    def latent(self, features: np.ndarray) -> np.ndarray:
        """(N, K) real scores centred on the threshold: a bit is set where the score is > 0.

        Supervised layers return the sigmoid activation minus 0.5; ITQ returns the rotated projection.
        """
        x = self._check(features)
        if self.kind == "itq":
            return _dense(x - self.params["mean"], self.params["proj"])
        return _centred_sigmoid(_dense(self._hidden(x), self.params["wl"], self.params["bl"]))

    def codes(self, features: np.ndarray, batch: int = 65536) -> np.ndarray:
        """Packed K-bit codes (N, ceil(K/8)) of ``features``, computed in blocks to bound memory."""
        x = self._check(features)
        out = [pack_bits(self.latent(x[s : s + batch]) > 0) for s in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, -(-self.bits // 8)), dtype=np.uint8)

    def encode(self, features: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray | None]:
        """(packed codes, re-rank features or None when re-ranking uses the input itself), in one pass."""
        x = self._check(features)
        space = self.info["rerank"]
        codes, feats = [], []
        for s in range(0, len(x), batch):
            chunk = x[s : s + batch]
            if self.kind == "supervised":
                h = self._hidden(chunk)
                z = _centred_sigmoid(_dense(h, self.params["wl"], self.params["bl"]))
            else:
                h, z = None, self.latent(chunk)
            codes.append(pack_bits(z > 0))
            if space == "hidden":
                feats.append(l2_normalize(h))
            elif space == "latent":
                feats.append(l2_normalize(z))
        if not codes:
            return np.zeros((0, -(-self.bits // 8)), dtype=np.uint8), None
        return np.concatenate(codes), (np.concatenate(feats) if feats else None)

    def rerank_features(self, features: np.ndarray) -> np.ndarray:
        """L2-normalised features candidates are re-ranked by (the input itself for ``input``)."""
        feats = self.encode(features)[1]
        return l2_normalize(self._check(features)) if feats is None else feats

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class indices (into ``info['classes']``) from a supervised layer's classifier."""
        if self.kind != "supervised":
            raise ValueError("only a supervised hash layer has a classifier")
        z = self.latent(features) + 0.5
        return np.argmax(z @ self.params["wc"] + self.params["bc"], axis=1)

    # ------------------------------------------------------------------ persistence

    def fingerprint(self) -> str:
        """Hash of the parameters and settings: codes computed with another fingerprint are stale."""
        h = hashlib.sha256(json.dumps([self.kind, self.bits, self.info.get("rerank")]).encode())
        for name in sorted(self.params):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.params[name]).tobytes())
        return h.hexdigest()[:16]

    def to_bytes(self) -> bytes:
        """Serialised ``.npz`` (the description travels as a JSON string inside it)."""
        buf = io.BytesIO()
        meta = {"kind": self.kind, "bits": self.bits, "info": self.info}
        np.savez(buf, __meta__=np.array(json.dumps(meta, sort_keys=True)), **self.params)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "HashLayer":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            params = {k: z[k] for k in z.files if k != "__meta__"}
        return cls(meta["kind"], int(meta["bits"]), params, meta["info"])

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically and durably (the layer lives in the index folder)."""
        atomic_write(path, self.to_bytes(), durable=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HashLayer":
        return cls.from_bytes(Path(path).read_bytes())


def _centred_sigmoid(z: np.ndarray) -> np.ndarray:
    """sigmoid(z) - 0.5, written with tanh so large |z| cannot overflow."""
    return 0.5 * np.tanh(0.5 * z)


def _dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w + b``. A query is a row or a few: numpy's own loop then, because waking BLAS's threads
    costs milliseconds on a busy machine, more than the product itself."""
    out = np.einsum("ij,jk->ik", x, w) if len(x) <= 16 else x @ w
    return out if b is None else out + b
