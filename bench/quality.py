"""Search quality: re-listing, copy detection and category-level retrieval, for the baseline, today's default and each lever.

    .venv/bin/python bench/quality.py            # full run (sets built once, embeddings cached)
    .venv/bin/python bench/quality.py --quick    # small sets, a few minutes

Builds three sets from packaged images (bench/quality_sets.py: Fashion-MNIST, Open Clip Art, scikit-image,
scikit-learn and matplotlib photos, Debian wallpapers), embeds every image once per feature extraction
(cached as .npy under $JIANSUO_BENCH_QUALITY or ~/.cache/jiansuo/bench-quality, keyed by the extraction's
parameters) and scores every method side by side:

- re-listing top-1: a synthetic re-listing of a catalogue product by another shop finds the listing first;
- copy detection top-1: a copy (crop, resize, JPEG, rotation, overlay, small image) finds its original first;
- category-level mAP@R and P@10: Fashion-MNIST test photos against train photos, relevant = same class.

Methods: the plain ImageNet baseline (resize 256, centre crop 224, average pool, exact cosine), the current
default (the product's preprocessing: fit in 224 padded white, average pool), each lever on top of the
default (bench/quality_levers.py: object framing, GeM pooling, multi-scale, αQE, DBA, PCA-whitening,
EfficientNet-Lite1/2, a supervised hash layer's learnt feature) and combinations. The section between the
markers in bench/RESULTS.md is rewritten by each full run (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_levers as lv  # noqa: E402
import quality_sets as qs  # noqa: E402
from results_md import write_section  # noqa: E402

CACHE = Path(os.environ.get("JIANSUO_BENCH_QUALITY", Path.home() / ".cache" / "jiansuo" / "bench-quality"))
LEVERS_VERSION = "1"   # bump when quality_levers changes the vectors of an existing extraction


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- feature extraction


@dataclass(frozen=True)
class Extract:
    """How an image becomes raw pooled features: decode, optional framing, square input, backbone."""

    model: str = "efficientnet-lite0"
    size: int = 224
    prep: str = "fit"                  # "fit": pad to a square (the product); "crop": resize + centre crop
    framing: lv.Framing | None = None
    draft: int | None = None           # JPEG draft-decode size; None: what the product uses

    def key(self) -> str:
        d = asdict(self)
        d["v"] = LEVERS_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def draft_size(self) -> int:
        if self.draft:
            return self.draft
        return round(self.size * 256 / 224) if self.prep == "crop" else self.size

    def prepare(self, path: str) -> np.ndarray:
        from jiansuo.images import load_image

        img = load_image(path, draft_size=self.draft_size())
        if self.prep == "crop":
            return lv.to_input(lv.resize_centre_crop(img, self.size))
        img, fill = lv.frame(img, self.framing)
        return lv.to_input(lv.fit_square(img, self.size, fill))


_NETS: dict[tuple[str, int], lv.PooledNet] = {}


def net_for(ex: Extract) -> lv.PooledNet:
    k = (ex.model, ex.size)
    if k not in _NETS:
        _NETS[k] = lv.PooledNet(ex.model, ex.size)
    return _NETS[k]


def embed(folder: Path, manifest: dict, ex: Extract, batch: int = 32) -> np.ndarray:
    """Raw pooled features (N, len(POOLS), D) float16 of every manifest entry, cached on disk."""
    path = CACHE / "emb" / folder.name / f"{ex.key()}.npy"
    n = len(manifest["entries"])
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] == n:
            return arr
    net = net_for(ex)
    files = [str(folder / e["file"]) for e in manifest["entries"]]
    out = None
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        chunks = [files[s : s + batch] for s in range(0, n, batch)]
        pending = pool.map(lambda c: np.stack([ex.prepare(f) for f in c]), chunks)
        for i, x in enumerate(pending):
            y = net(x)
            if out is None:
                out = np.empty((n, *y.shape[1:]), dtype=np.float16)
            out[i * batch : i * batch + len(x)] = y
            if i % 40 == 0:
                log(f"    embedding {folder.name} [{describe(ex)}]: {i * batch}/{n} "
                    f"({time.perf_counter() - start:.0f} s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    (path.with_suffix(".json")).write_text(json.dumps({"extract": asdict(ex), "seconds": time.perf_counter() - start,
                                                       "load": os.getloadavg()[0]}, default=str))
    return out


def describe(ex: Extract) -> str:
    s = f"{ex.model.replace('efficientnet-', '')} {ex.prep}{ex.size}"
    if ex.framing is not None:
        s += " framed"
    return s


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A ranking: features (several averaged: scales or models), then optional label-free post-processing."""

    name: str
    feats: tuple[tuple[Extract, str], ...]
    whiten: tuple[int | None, float] | None = None    # (dims, power) of PCA-whitening learnt on the database
    dba: tuple[int, float] | None = None              # (k, alpha)
    qe: tuple[int, float] | None = None               # (n, alpha)
    hash_blend: float | None = None                   # weight of a supervised hash layer's learnt feature
    intent: tuple["Method", "Method", float] | None = None  # (same, similar, threshold): one ranking for both
    note: str = ""


def base_vectors(m: Method, folder: Path, manifest: dict) -> np.ndarray:
    acc = None
    for ex, pool in m.feats:
        raw = embed(folder, manifest, ex)
        v = lv.l2n(np.asarray(raw[:, lv.POOLS.index(pool)], dtype=np.float32))
        acc = v if acc is None else acc + v
    return lv.l2n(acc)


@dataclass
class SetData:
    name: str
    folder: Path
    manifest: dict
    db_rows: np.ndarray = field(init=False)
    q_rows: np.ndarray = field(init=False)

    def __post_init__(self):
        roles = [e["role"] for e in self.manifest["entries"]]
        self.db_rows = np.array([i for i, r in enumerate(roles) if r == "db"])
        self.q_rows = np.array([i for i, r in enumerate(roles) if r == "query"])


def scores(m: Method, sd: SetData, ctx: "Context") -> np.ndarray:
    """Similarities (queries × database) of method ``m`` on set ``sd``."""
    if m.intent is not None:
        same, similar, tau = m.intent
        return lv.two_intent_scores(scores(same, sd, ctx), scores(similar, sd, ctx), tau)
    x = base_vectors(m, sd.folder, sd.manifest)
    db, q = x[sd.db_rows], x[sd.q_rows]
    if m.hash_blend is not None:
        layer = ctx.layer(m)
        s_plain = q @ db.T
        hq, hdb = layer.rerank_features(q), layer.rerank_features(db)
        return (1 - m.hash_blend) * s_plain + m.hash_blend * (hq @ hdb.T)
    if m.whiten is not None:
        w = lv.pca_whitening(db, dim=m.whiten[0], power=m.whiten[1])
        db, q = w(db), w(q)
    if m.dba is not None:
        db = lv.database_side_augmentation(db, *m.dba)
    if m.qe is not None:
        q = lv.alpha_query_expansion(q, db, *m.qe)
    return q @ db.T


class Context:
    """Per-run state: the sets, and supervised hash layers trained on the category database's labels."""

    def __init__(self, sets: dict[str, SetData]):
        self.sets = sets
        self._layers: dict[str, object] = {}

    def layer(self, m: Method):
        from jiansuo.hashing.layer import HashLayer
        from jiansuo.hashing.train import train_supervised

        base = replace(m, hash_blend=None, name="")
        key = hashlib.sha256(repr((base.feats, self.sets["category"].folder.name)).encode()).hexdigest()[:16]
        if key not in self._layers:
            path = CACHE / "layers" / f"sup48-{key}.npz"
            if path.is_file():
                self._layers[key] = HashLayer.load(path)
            else:
                sd = self.sets["category"]
                x = base_vectors(base, sd.folder, sd.manifest)[sd.db_rows]
                labels = [str(sd.manifest["entries"][i]["label"]) for i in sd.db_rows]
                log(f"    training a supervised 48-bit hash layer on {len(x)} labelled database photos")
                layer = train_supervised(x, labels, 48, progress=False)
                path.parent.mkdir(parents=True, exist_ok=True)
                layer.save(path)
                self._layers[key] = layer
        return self._layers[key]


# ----------------------------------------------------------------------------- metrics


def top1(sims: np.ndarray, target_rows: np.ndarray) -> np.ndarray:
    return np.argmax(sims, axis=1) == target_rows


def map_at_r(sims: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray) -> tuple[float, float]:
    """(mAP@R, P@10): R = the number of database items of the query's class (Musgrave et al. 2020)."""
    aps, p10 = [], []
    counts = {c: int(np.sum(db_labels == c)) for c in np.unique(db_labels)}
    for row, lab in zip(sims, q_labels):
        r = counts[lab]
        order = np.argpartition(-row, r - 1)[:r]
        order = order[np.argsort(-row[order], kind="stable")]
        rel = db_labels[order] == lab
        prec = np.cumsum(rel) / np.arange(1, r + 1)
        aps.append(float(np.sum(prec * rel) / r))
        p10.append(float(np.mean(rel[:10])))
    return float(np.mean(aps)), float(np.mean(p10))


def evaluate(m: Method, ctx: Context) -> dict:
    out: dict = {}
    rl = ctx.sets["relisting"]
    ents = rl.manifest["entries"]
    item_row = {ents[i]["item"]: n for n, i in enumerate(rl.db_rows)}
    tgt = np.array([item_row[ents[i]["target"]] for i in rl.q_rows])
    hit = top1(scores(m, rl, ctx), tgt)
    src = np.array([ents[i]["source"].split("/")[0] for i in rl.q_rows])
    out["relist"] = float(hit.mean())
    out["relist_fm"] = float(hit[src == "fmnist-train"].mean())
    out["relist_clip"] = float(hit[src == "openclipart"].mean())

    cp = ctx.sets["copy"]
    ents = cp.manifest["entries"]
    item_row = {ents[i]["item"]: n for n, i in enumerate(cp.db_rows)}
    tgt = np.array([item_row[ents[i]["target"]] for i in cp.q_rows])
    hit = top1(scores(m, cp, ctx), tgt)
    tr = np.array([ents[i]["transform"] for i in cp.q_rows])
    kind = np.array([ents[i]["kind"] for i in cp.q_rows])
    out["copy"] = float(hit.mean())
    out["copy_misses"] = int((~hit).sum())
    for t in qs.TRANSFORMS:
        out[f"copy_{t}"] = float(hit[tr == t].mean())
    out["copy_photo"] = float(hit[kind == "photo"].mean())
    out["copy_shot"] = float(hit[kind == "shot"].mean())

    ct = ctx.sets["category"]
    ents = ct.manifest["entries"]
    s = scores(m, ct, ctx)
    out["map_r"], out["p10"] = map_at_r(s, np.array([ents[i]["label"] for i in ct.q_rows]),
                                        np.array([ents[i]["label"] for i in ct.db_rows]))
    return out


# ----------------------------------------------------------------------------- the methods measured

L0 = "efficientnet-lite0"
PLAIN = Extract(prep="crop")
DEFAULT = Extract()


def framed(ex: Extract, f: lv.Framing | None = None) -> Extract:
    return replace(ex, framing=f or lv.Framing())


def methods(quick: bool) -> list[Method]:
    F = lv.Framing()
    d, fr = DEFAULT, framed(DEFAULT, F)
    ms = [
        Method("plain baseline", ((PLAIN, "gap"),), note="resize 256, centre crop 224, average pool"),
        Method("current default", ((d, "gap"),), note="fit in 224 padded white, average pool"),
        Method("+ framing", ((fr, "gap"),)),
        Method("+ GeM p=3", ((d, "gem3"),)),
        Method("+ multi-scale 224+288", ((d, "gap"), (replace(d, size=288), "gap"))),
        Method("+ αQE n=2", ((d, "gap"),), qe=(2, 3.0)),
        Method("+ DBA k=3", ((d, "gap"),), dba=(3, 3.0)),
        Method("+ PCA-whitening", ((d, "gap"),), whiten=(None, 0.5)),
        Method("+ Lite1 (240)", ((Extract(model="efficientnet-lite1", size=240), "gap"),)),
        Method("+ Lite2 (260)", ((Extract(model="efficientnet-lite2", size=260), "gap"),)),
        Method("framing + GeM", ((fr, "gem3"),)),
        Method("framing + DBA + αQE", ((fr, "gap"),), dba=(3, 3.0), qe=(2, 3.0)),
        Method("framing + whitening + DBA + αQE", ((fr, "gap"),), whiten=(None, 0.5), dba=(3, 3.0), qe=(2, 3.0)),
    ]
    return ms


# ----------------------------------------------------------------------------- output


COLS = [("relist", "re-listing top-1"), ("copy", "copy top-1"), ("map_r", "category mAP@R"), ("p10", "P@10")]


def fmt_table(rows: list[tuple[Method, dict]]) -> str:
    head = "| method | " + " | ".join(c for _, c in COLS) + " | re-listing: FM / clip art | notes |"
    lines = [head, "|" + "---|" * (len(COLS) + 3)]
    for m, r in rows:
        cells = [f"{r[k]:.4f}" for k, _ in COLS]
        lines.append(f"| {m.name} | " + " | ".join(cells) + f" | {r['relist_fm']:.3f} / {r['relist_clip']:.3f} | {m.note} |")
    return "\n".join(lines)


def fmt_copy(rows: list[tuple[Method, dict]]) -> str:
    head = "| method | " + " | ".join(qs.TRANSFORMS) + " | photos | product shots | misses |"
    lines = [head, "|" + "---|" * (len(qs.TRANSFORMS) + 4)]
    for m, r in rows:
        lines.append(f"| {m.name} | " + " | ".join(f"{r['copy_' + t]:.4f}" for t in qs.TRANSFORMS)
                     + f" | {r['copy_photo']:.4f} | {r['copy_shot']:.4f} | {r['copy_misses']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sets (a few minutes)")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only methods whose name matches")
    ap.add_argument("--no-write", action="store_true", help="print only (a --quick run never writes)")
    args = ap.parse_args(argv)
    missing = qs.missing_sources()
    if missing:
        log("missing sources: " + ", ".join(missing) + "\ninstall with:\n  " + qs.INSTALL)
        return 2
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    sets = {}
    for name in ("relisting", "copy", "category"):
        folder, manifest = qs.get_set(CACHE, name, args.quick, progress=log)
        sets[name] = SetData(name, folder, manifest)
    ctx = Context(sets)
    rows = []
    wanted = [w for w in args.only.split(",") if w]
    for m in methods(args.quick):
        if wanted and not any(w in m.name for w in wanted):
            continue
        start = time.perf_counter()
        r = evaluate(m, ctx)
        rows.append((m, r))
        log(f"  {m.name}: re-listing {r['relist']:.4f}  copy {r['copy']:.4f}  mAP@R {r['map_r']:.4f}  "
            f"P@10 {r['p10']:.4f}  ({time.perf_counter() - start:.0f} s)")
    print(fmt_table(rows))
    print()
    print(fmt_copy(rows))
    log(f"total {time.perf_counter() - t0:.0f} s, load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
