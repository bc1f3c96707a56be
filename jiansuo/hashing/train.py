"""Supervised hash layer training (Lin et al., CVPR-W 2015) on the index's stored features.

The network is ``features → standardise → [Linear → ReLU → Dropout] × h → Linear → sigmoid (K latent
units) → Linear → softmax over the catalogue's labels``, trained with cross-entropy. The frozen
extractor's vectors are the input, so training never re-embeds an image and codes for images added
later come from their stored vectors.

Why this design (Fashion-MNIST protocol, 48 bits, Hamming-ranking mAP@1000; a one-off exploration on a
GPU with the same network in PyTorch, features within cosine 0.998 of the ONNX ones): a linear head
0.893; one hidden layer of 512 or 1024 units 0.924-0.926 (60 epochs: 0.930); two hidden layers 0.920;
richer input (pooled features of three more blocks, or flipped copies) 0.928; fine-tuning the last two
blocks of the backbone 0.917 and the whole backbone 0.925 (3 epochs each). Fine-tuning gains nothing
measurable here, yet costs a backward pass through the network per image and epoch (hours on a
2-core CPU) plus re-embedding the catalogue with a second network; the head costs about 4 CPU-minutes
for 60,000 labelled images (20 epochs, measured on a shared 2-core machine; ``bench/hashing.py``).
"""

from __future__ import annotations

import sys
import time
from typing import Hashable, Sequence

import numpy as np

from .layer import HashLayer


def train_supervised(
    features: np.ndarray,
    labels: Sequence[Hashable],
    bits: int = 48,
    *,
    hidden: Sequence[int] = (512,),
    epochs: int = 20,
    batch_size: int = 512,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    dropout: float = 0.3,
    input_dropout: float = 0.0,
    label_smoothing: float = 0.1,
    rerank: str = "hidden",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> HashLayer:
    """Train a supervised :class:`HashLayer` of ``bits`` latent sigmoid units on labelled features.

    ``labels`` may be any hashable values (folder names, strings from a CSV); at least two distinct
    labels are needed. Training is seeded and single-process, so a given input gives the same layer.
    """
    import torch
    from torch import nn

    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"expected features (N, D) and N labels, got {x.shape} and {len(labels)} labels")
    if bits < 8 or bits % 8:
        raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
    classes = sorted({str(lab) for lab in labels})
    if len(classes) < 2:
        raise ValueError("supervised training needs at least two different labels (use --unsupervised otherwise)")
    index_of = {c: i for i, c in enumerate(classes)}
    y = np.array([index_of[str(lab)] for lab in labels], dtype=np.int64)

    mean = x.mean(axis=0)
    scale = 1.0 / (x.std(axis=0) + 1e-6)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout else []
    width = x.shape[1]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    body = nn.Sequential(*layers)
    latent = nn.Linear(width, bits)
    classifier = nn.Linear(bits, len(classes))
    model = nn.ModuleDict({"body": body, "latent": latent, "classifier": classifier}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    batches = -(-len(x) // batch_size)
    # A small labelled set is one batch an epoch: a few epochs would be a few steps, far from trained.
    epochs = max(epochs, -(-MIN_STEPS // batches))
    steps = epochs * batches
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    xt = torch.from_numpy((x - mean) * scale).to(device)
    yt = torch.from_numpy(y).to(device)

    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen).to(device)
        total = 0.0
        for s in range(0, len(xt), batch_size):
            idx = order[s : s + batch_size]
            logits = classifier(torch.sigmoid(latent(body(xt[idx]))))
            loss = loss_fn(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if progress and (epoch + 1) % max(1, epochs // 20) == 0:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xt):.4f} "
                  f"({time.perf_counter() - start:.0f}s)", file=sys.stderr)

    params = {"mean": mean, "scale": scale}
    linears = [m for m in body if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        params[f"w{i}"] = lin.weight.detach().cpu().numpy().T.copy()
        params[f"b{i}"] = lin.bias.detach().cpu().numpy().copy()
    params["wl"] = latent.weight.detach().cpu().numpy().T.copy()
    params["bl"] = latent.bias.detach().cpu().numpy().copy()
    params["wc"] = classifier.weight.detach().cpu().numpy().T.copy()
    params["bc"] = classifier.bias.detach().cpu().numpy().copy()
    layer = HashLayer("supervised", bits, params, {
        "rerank": rerank if hidden or rerank != "hidden" else "latent",
        "classes": classes, "hidden": list(hidden), "epochs": epochs, "trained_on": int(len(x)),
        "train_seconds": round(time.perf_counter() - start, 1),
    })
    layer.info["train_accuracy"] = round(float(np.mean(layer.predict(x) == y)), 4)
    return layer


#: Fewest optimisation steps a layer is trained for: small sets get more epochs than asked (recorded).
MIN_STEPS = 200
#: Share of the labelled photos (at most HELD_OUT_MAX) kept out of training to judge the learnt ranking.
HELD_OUT_SHARE, HELD_OUT_MAX = 0.2, 2000


def train_judged(features: np.ndarray, labels: Sequence[Hashable], bits: int = 48, *, seed: int = 0,
                 progress: bool = True, **options) -> HashLayer:
    """A supervised layer trained on most of the labelled photos, and judged on the rest.

    A fifth of the photos (at most 2,000, every label represented) is held out. The layer is trained on
    the others; then the held-out photos query them, ranked by the default ranking with the expanded
    query, with the layer's learnt feature (:mod:`jiansuo.search.ranking`) and by the plain feature
    alone. The default ranking uses the learnt feature only when it was measurably better than both
    there (mAP@100 up by at least 0.01, P@10 not lower), and ``--mode hash`` re-ranks its candidates
    by the learnt feature only when it was measurably better than the plain one (else by the stored
    vectors, as for ITQ, unless ``rerank`` is given): a layer may never make searches worse. Small
    labelled sets are where the learnt feature over-fits. The figures are kept in ``layer.info``.
    """
    x = np.asarray(features, dtype=np.float32)
    labels = [str(lab) for lab in labels]
    held = _held_out(labels, seed)
    if len(held) == 0:
        layer = train_supervised(x, labels, bits, seed=seed, progress=progress, **options)
        layer.info.update(similar_ranking="expanded", judged="too few labelled photos to hold any out")
        return layer
    keep = np.setdiff1d(np.arange(len(x)), held)
    layer = train_supervised(x[keep], [labels[i] for i in keep], bits, seed=seed, progress=progress, **options)
    figures = {name: _judge(layer, x[keep], [labels[i] for i in keep], x[held], [labels[i] for i in held], name)
               for name in ("plain", "expanded", "learned")}

    def beats(other: str) -> bool:
        return (figures["learned"]["map100"] >= figures[other]["map100"] + 0.01
                and figures["learned"]["p10"] >= figures[other]["p10"])

    layer.info.update(similar_ranking="learned" if beats("expanded") and beats("plain") else "expanded",
                      judged_on=len(held),
                      judgement={k: {m: round(v, 4) for m, v in f.items()} for k, f in figures.items()})
    if not beats("plain") and "rerank" not in options:
        layer.info["rerank"] = "input"
    return layer


def _held_out(labels: list[str], seed: int) -> np.ndarray:
    """Rows to hold out: the same share of every label, none for a label with fewer than 5 photos."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(labels))
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    n_held = min(int(HELD_OUT_SHARE * len(labels)), HELD_OUT_MAX)
    out = []
    for members in by_label.values():
        if len(members) >= 5:
            take = max(1, round(n_held * len(members) / len(labels)))
            out.extend(rng.choice(members, min(take, len(members) - 2), replace=False))
    return np.sort(np.asarray(out, dtype=np.int64)) if len(by_label) > 1 else rows[:0]


def _judge(layer: HashLayer, db: np.ndarray, db_labels: list[str], queries: np.ndarray, query_labels: list[str],
           ranking: str) -> dict[str, float]:
    """mAP@100 and P@10 of the default ranking of held-out queries over ``db``, with ``ranking`` for the
    similar-style part ("expanded" or "learned"), or of the plain ranking ("plain")."""
    import tempfile

    from ..evaluation import mean_average_precision, precision_at, relevance
    from ..index.store import ItemInfo
    from ..search.folder import FolderStore
    from ..search.ranking import rank

    judged = HashLayer(layer.kind, layer.bits, layer.params, {**layer.info, "similar_ranking": ranking})
    with tempfile.TemporaryDirectory(prefix="jiansuo-judge-") as tmp:
        model = {"name": "held-out", "version": "1", "dim": db.shape[1], "preprocessing": ""}
        with FolderStore.open(f"{tmp}/judge.idx", model=model) as store:
            store.add([ItemInfo(f"{n}") for n in range(len(db))], db)
            store.set_hash_layer(judged)
            results = rank(store, queries, 100, mode="exact", intent="same" if ranking == "plain" else "both")
    rels = relevance([[db_labels[int(h.id)] for h in r.hits] for r in results], query_labels)
    return {"map100": mean_average_precision(rels, 100), "p10": precision_at(rels, 10)}
