"""Near-identical images in a store: the same photo uploaded twice, re-encoded, resized, cropped or watermarked.

Three steps, none of which compares all pairs:

1. candidates: each image's ``k`` nearest neighbours (the store's own search, so the ANN graph of a
   large index folder or pgvector's HNSW), kept when their cosine reaches the threshold;
2. verification (:class:`Rule`): a pair is accepted on its cosine alone when that is very high, else
   only when the two files, aligned (by their frames, by ORB keypoints and one affine transform, or,
   too plain for keypoints, by placing one within the other),
   agree pixel by pixel over their overlap (:mod:`jiansuo.features.local`); two different products
   photographed alike pass the first test but not the second;
3. groups: accepted pairs joined transitively (union-find); a group's score is the lowest cosine of
   its accepted pairs.

The default rule is calibrated by ``bench/duplicates.py`` on the copy-detection set of the quality
benchmark. Nothing here knows about Django: the CLI and the site's admin call :func:`find_duplicates`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .store import VectorStore
from .verify import disagreement, file_features

#: Neighbours looked at per image.
DEFAULT_K = 10
#: Queries searched together while collecting candidates.
BATCH = 1024
#: Graph beam width for candidates in an index folder: a copy is among an image's very nearest
#: neighbours, which a narrow beam finds (bench/duplicates.py --scale measures recall and time).
CANDIDATE_EF = 48


@dataclass(frozen=True)
class Rule:
    """When a candidate pair counts as a duplicate.

    ``cosine ≥ accept``: accepted without reading the images. ``threshold ≤ cosine < accept``: accepted
    when, once aligned, at most ``max_disagreement`` of their overlap differs in colour
    (:func:`jiansuo.features.local.compare`). ``threshold`` is also the lowest cosine a candidate may
    have. ``verify=False`` accepts every candidate (the cosine-only baseline).
    """

    threshold: float = 0.75
    accept: float = 0.95
    max_disagreement: float = 0.08
    verify: bool = True

    def needs_images(self, cosine: float) -> bool:
        return self.verify and cosine < self.accept

    def accepts(self, cosine: float, disagreement: float | None = None) -> bool:
        """Whether a pair of this cosine (and, when its images were compared, this disagreement) is a duplicate."""
        if cosine < self.threshold:
            return False
        if not self.needs_images(cosine):
            return True
        return disagreement is not None and disagreement <= self.max_disagreement


DEFAULT_RULE = Rule()


@dataclass(frozen=True)
class Pair:
    """Two images (``a < b``), their cosine, and the share of their overlap that disagrees (None: not compared)."""

    a: str
    b: str
    score: float
    disagreement: float | None = None


@dataclass
class Group:
    """Near-identical images (ids sorted) and the lowest cosine among the accepted pairs joining them."""

    ids: list[str]
    score: float
    pairs: list[Pair] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"ids": self.ids, "score": round(self.score, 4)}


@dataclass
class Report:
    """What :func:`find_duplicates` found, and what it could not read."""

    groups: list[Group]
    candidates: int
    verified: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def candidate_pairs(store: VectorStore, *, k: int = DEFAULT_K, min_cosine: float = DEFAULT_RULE.threshold,
                    batch: int = BATCH, ids: list[str] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[tuple[str, str], float]:
    """Pairs of images (``a < b``) where one is among the other's ``k`` nearest with cosine ≥ ``min_cosine``."""
    ids = store.ids() if ids is None else ids
    options = {}
    if store.kind == "folder" and store.resolve_mode("auto") == "ann":
        options = {"ef": CANDIDATE_EF, "candidates": max(2 * (k + 1), 16)}
    pairs: dict[tuple[str, str], float] = {}
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        results = store.search(store.get(chunk), k + 1, mode="auto", min_score=min_cosine, **options)
        for item, result in zip(chunk, results):
            for hit in result.hits:
                if hit.id != item:
                    key = (item, hit.id) if item < hit.id else (hit.id, item)
                    pairs[key] = max(pairs.get(key, -1.0), hit.score)
        if progress is not None:
            progress(min(start + batch, len(ids)), len(ids))
    return pairs


def verify_pairs(pairs: dict[tuple[str, str], float], root: str | os.PathLike | None, rule: Rule = DEFAULT_RULE,
                 *, workers: int | None = None, skipped: list[tuple[str, str]] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[Pair]:
    """The candidate pairs ``rule`` accepts; files are read under ``root`` (the indexed folder);
    ``progress(done, total)`` is called as pairs are checked.

    An image that cannot be read (gone, truncated, not an image) is added to ``skipped`` with the
    reason, once, and no pair with it is accepted.
    """
    skipped = [] if skipped is None else skipped
    base = Path(root) if root else Path()
    features = file_features(root)  # an image is usually in a few pairs, in id order: a small cache
    bad: dict[str, str] = {}

    def present(item: str) -> bool:
        if item in bad:
            return False
        if not (base / item).is_file():
            bad[item] = "file not found"
            return False
        return True

    def check(key: tuple[str, str]) -> Pair | None:
        a, b = key
        cosine = pairs[key]
        if not rule.needs_images(cosine):
            # Accepted on the cosine: only make sure both listings still have their file.
            return Pair(a, b, cosine) if present(a) and present(b) and rule.accepts(cosine) else None
        fa, fb = features(a), features(b)
        for item, f in ((a, fa), (b, fb)):
            if isinstance(f, str):
                bad.setdefault(item, f)
        if isinstance(fa, str) or isinstance(fb, str):
            return None
        found = disagreement(fa, fb, rule.max_disagreement)
        return Pair(a, b, cosine, found) if rule.accepts(cosine, found) else None

    order = sorted(k for k, c in pairs.items() if c >= rule.threshold)
    with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
        accepted = []
        for done, pair in enumerate(pool.map(check, order), 1):
            if pair is not None:
                accepted.append(pair)
            if progress is not None:
                progress(done, len(order))
    accepted = [p for p in accepted if p.a not in bad and p.b not in bad]
    skipped.extend(sorted(bad.items()))
    return accepted


def group_pairs(pairs: Iterable[Pair]) -> list[Group]:
    """Accepted pairs joined transitively; groups sorted by score (highest first), then by their first id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    pairs = list(pairs)
    for p in pairs:
        ra, rb = find(p.a), find(p.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for x in parent:
        members.setdefault(find(x), []).append(x)
    edges: dict[str, list[Pair]] = {}
    for p in pairs:
        edges.setdefault(find(p.a), []).append(p)
    groups = [Group(sorted(m), min(e.score for e in edges[r]), sorted(edges[r], key=lambda e: (e.a, e.b)))
              for r, m in members.items()]
    groups.sort(key=lambda g: (-g.score, g.ids[0]))
    return groups


def find_duplicates(store: VectorStore, root: str | os.PathLike | None, rule: Rule = DEFAULT_RULE, *,
                    k: int = DEFAULT_K, workers: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> Report:
    """Groups of near-identical images in ``store`` whose files lie under ``root`` (see the module's notes);
    ``progress(step, done, total)`` is called as each step ("candidates", then "verifying") goes."""
    def step(name: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(name, done, total))

    pairs = candidate_pairs(store, k=k, min_cosine=rule.threshold, progress=step("candidates"))
    skipped: list[tuple[str, str]] = []
    accepted = verify_pairs(pairs, root, rule, workers=workers, skipped=skipped, progress=step("verifying"))
    checked = sum(1 for c in pairs.values() if c >= rule.threshold and rule.needs_images(c))
    return Report(group_pairs(accepted), candidates=len(pairs), verified=checked, skipped=skipped)
