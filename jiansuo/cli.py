"""The ``jiansuo`` command line: index a folder of product photos, search it by image, inspect it.

Each subcommand has an ``_add_<name>`` function that declares its arguments and a ``_cmd_<name>``
function that runs it; ``main`` wires them together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CLIError(Exception):
    """A user-facing error: printed as 'jiansuo: error: ...' without a traceback."""


# --------------------------------------------------------------------------- shared helpers


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True,
                   help="index folder (e.g. catalog.idx), or a PostgreSQL URL (postgresql://user@host/db)")


def _model_args(p: argparse.ArgumentParser, default: str | None) -> None:
    from .features.base import DEFAULT_MODEL

    p.add_argument("--model", default=default,
                   help=f"feature extractor (default: {DEFAULT_MODEL} for a new index, else the index's own)")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights file for models that need one (vgg16: Keras .h5 or torchvision .pth; "
                        "or set JIANSUO_VGG16_WEIGHTS)")


def _open_store(location: str):
    from .search import open_store

    return open_store(location)


def _extractor_for(store, model: str | None, weights: Path | None):
    """The extractor an existing store was built with; a different ``--model`` is a clear error."""
    from .features import get_extractor

    name = store.model["name"]
    if model and model != name:
        raise CLIError(f"index {store.location} was built with --model {name}; "
                       f"it cannot be searched or extended with {model}")
    weights = weights or store.meta().get("weights") or None
    # Queries run at the precision the stored vectors were made with: int8 and fp32 vectors differ a little.
    extractor = get_extractor(name, weights=weights, precision=store.model.get("precision", "fp32"))
    store.check_model(extractor.describe())
    return extractor


# --------------------------------------------------------------------------- index


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="index every image under a folder (later runs: only what changed)")
    p.add_argument("folder", type=Path, help="folder of product photos, searched recursively")
    _index_arg(p)
    _model_args(p, None)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage type of the vectors in a new index folder (float16 halves memory)")
    p.add_argument("--precision", choices=["fp32", "int8"], default=None,
                   help="network precision of a new index: int8 (the statically quantised network, the default for "
                        "efficientnet-lite0: about twice as fast, see the README for its measured quality) or fp32; "
                        "an existing index keeps its own unless --rebuild")
    p.add_argument("--rebuild", action="store_true",
                   help="forget every stored vector and embed the whole folder again (after a model or "
                        "preprocessing change)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count)")
    p.add_argument("--commit-every", type=int, default=1024,
                   help="images per commit: an interrupted run loses at most this many (default 1024)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_index)


def _cmd_index(args) -> int:
    from .features import DEFAULT_MODEL, get_extractor
    from .index import IndexError_
    from .pipeline import sync_folder
    from .search import open_store

    if not args.folder.is_dir():
        raise CLIError(f"{args.folder} is not a folder")
    try:
        store = _open_store(args.index)
    except IndexError_:
        store = None  # none yet: created below for the chosen model
    if store is not None:
        if args.model and args.model != store.model["name"] and not args.rebuild:
            raise CLIError(f"index {store.location} was built with --model {store.model['name']}; "
                           f"use that, or --rebuild to embed every image again with {args.model}")
        stored_precision = store.model.get("precision", "fp32")
        if args.precision and args.precision != stored_precision and not args.rebuild:
            raise CLIError(f"index {store.location} holds {stored_precision} vectors; use --precision "
                           f"{stored_precision}, or --rebuild to embed every image again at {args.precision}")
        extractor = get_extractor(args.model or store.model["name"],
                                  weights=args.weights or store.meta().get("weights") or None,
                                  precision=args.precision or stored_precision)
        try:
            store.check_model(extractor.describe())
            stale = args.rebuild
        except IndexError_:  # the same model, prepared an older way: its vectors cannot be mixed with new ones
            stale = True
            print(f"index {store.location} was built with an older version of {extractor.name} or of the way "
                  "images are prepared for it: embedding every image again", file=sys.stderr)
        if stale:
            forgotten = store.reset(extractor.describe())
            print(f"rebuilding: forgot {forgotten} vectors", file=sys.stderr)
    else:
        extractor = get_extractor(args.model or DEFAULT_MODEL, weights=args.weights, precision=args.precision)
        store = open_store(args.index, model=extractor.describe(), dtype=args.dtype)
    with store:
        store.set_meta("root", str(args.folder.resolve()))
        if args.weights:
            store.set_meta("weights", str(args.weights.resolve()))
        report = sync_folder(store, args.folder, extractor, batch_size=args.batch_size,
                             commit_every=args.commit_every, workers=args.workers,
                             progress=not args.no_progress)
        store.maintain(progress=not args.no_progress)  # e.g. the ANN graph ready before the first search
        total = len(store)
    if args.json:
        print(json.dumps({"indexed": report.indexed, "unchanged": report.unchanged, "removed": report.removed,
                          "skipped": [{"id": i, "reason": r} for i, r in report.skipped],
                          "total": total, "seconds": round(report.seconds, 3)}, indent=1))
    else:
        print(report.summary())
        print(f"index {args.index}: {total} images")
    return EXIT_OK


# --------------------------------------------------------------------------- add / remove


def _add_add(sub) -> None:
    p = sub.add_parser("add", help="add or re-embed single image files")
    p.add_argument("files", nargs="+", type=Path)
    _index_arg(p)
    _model_args(p, None)
    p.add_argument("--root", type=Path, default=None,
                   help="folder the ids are relative to (default: the folder the index was built from)")
    p.set_defaults(func=_cmd_add)


def _cmd_add(args) -> int:
    from .pipeline import add_files, relative_id

    with _open_store(args.index) as store:
        root = (args.root or Path(store.meta().get("root") or Path.cwd())).resolve()
        files = []
        for f in args.files:
            path = f.resolve()
            try:
                files.append((path, relative_id(path, root)))
            except ValueError:
                raise CLIError(f"{f} is not under the catalogue folder {root} (use --root)") from None
        extractor = _extractor_for(store, args.model, args.weights)
        skipped: list[tuple[str, str]] = []
        added = add_files(store, files, extractor, progress=False, skipped=skipped)
        for item_id, reason in skipped:
            print(f"skipped {item_id}: {reason}", file=sys.stderr)
        print(f"added {added}, skipped {len(skipped)}; index {args.index}: {len(store)} images")
    return EXIT_OK if not skipped else EXIT_ERROR


def _add_remove(sub) -> None:
    p = sub.add_parser("remove", help="remove images from the index (by id or by path)")
    p.add_argument("items", nargs="+", help="image ids (paths relative to the catalogue folder) or file paths")
    _index_arg(p)
    p.set_defaults(func=_cmd_remove)


def _cmd_remove(args) -> int:
    with _open_store(args.index) as store:
        root = Path(store.meta().get("root") or Path.cwd())
        ids = []
        for item in args.items:
            path = Path(item)
            if item not in store and path.exists():
                try:
                    item = path.resolve().relative_to(root.resolve()).as_posix()
                except ValueError:
                    pass
            ids.append(item)
        removed = store.remove(ids)
        missing = len(ids) - removed
        print(f"removed {removed}" + (f", {missing} not in the index" if missing else "")
              + f"; index {args.index}: {len(store)} images")
    return EXIT_OK


# --------------------------------------------------------------------------- search


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="find the catalogue images most similar to query images")
    p.add_argument("queries", nargs="+", type=Path, help="query image files")
    _index_arg(p)
    _model_args(p, None)
    p.add_argument("--top-k", "-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--min-score", type=float, default=None, help="drop results below this cosine similarity")
    p.add_argument("--mode", default="auto",
                   help="search strategy: auto (default: exact below the ANN threshold, ann above), exact, ann, "
                        "hash (a trained hash layer); PostgreSQL also pca")
    p.add_argument("--ef", type=int, default=None,
                   help="ann: graph search beam width, higher is more accurate and slower (default 128)")
    p.add_argument("--candidates", type=int, default=None,
                   help="ann/hash: how many candidates are re-ranked with the full features")
    p.add_argument("--hamming-only", action="store_true",
                   help="hash: rank by Hamming distance alone, no re-ranking")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sheet", type=Path, default=None,
                   help=f"write a contact sheet image of the results (of the first {SHEET_MAX_QUERIES} queries)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="queries embedded and searched together; memory stays bounded for any number of queries")
    p.add_argument("--intent", choices=["both", "same", "similar"], default="both",
                   help="both (default): the product itself first (and near-copies), then products like it; "
                        "same: plain nearest neighbours (e.g. to find duplicates); similar: products like it")
    p.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1",
                   help="search with this part of each query photo only: its corners as fractions of the "
                        "width and height (0-1), e.g. 0.5,0,1,1 for the right half")
    p.add_argument("--auto-box", action="store_true",
                   help="search with the part of each photo that matches the catalogue best (the product in a "
                        "shopper's photo of a room or an outfit); photos that are the product stay whole")
    p.add_argument("--verify", action="store_true",
                   help="check the first 16 results against each photo's pixels (aligned as duplicates are) and put "
                        "the one that is a copy of it first: small, rotated and cropped copies are found first more "
                        "often; reads those results' files (under the index's root), about 15 ms each")
    p.set_defaults(func=_cmd_search)


#: Queries drawn on a contact sheet (more would make an image too large to open).
SHEET_MAX_QUERIES = 100


def _search_options(args) -> dict:
    """Mode-specific options from the command line (modes add their own arguments)."""
    options = {}
    if args.ef is not None:
        options["ef"] = args.ef
    if args.candidates is not None:
        options["candidates"] = args.candidates
    if args.hamming_only:
        options["rerank"] = False
    return options


def _cmd_search(args) -> int:
    from .images import Box
    from .pipeline import embed_files
    from .search.ranking import rank

    if args.top_k < 1 or args.batch_size < 1:
        raise CLIError("--top-k and --batch-size must be at least 1")
    if args.box is not None and args.auto_box:
        raise CLIError("--box and --auto-box: choose one")
    if args.verify and (args.box is not None or args.auto_box):
        raise CLIError("--verify compares whole photos: not with --box or --auto-box")
    try:
        box = Box.parse(args.box) if args.box is not None else None
    except ValueError as exc:
        raise CLIError(f"--box: {exc}") from None
    failed: list[tuple[str, str]] = []
    sheet_rows = []
    with _open_store(args.index) as store, _SearchOutput(args.json) as out:
        extractor = _extractor_for(store, args.model, args.weights)
        options = _search_options(args)
        store.resolve_mode(args.mode)  # an unknown mode fails before any work
        root = store.meta().get("root")
        stored = None
        if args.verify:
            from .search.verify import file_features

            if not root:
                raise CLIError("--verify reads the indexed files, but this index does not know their folder")
            stored = file_features(root)
        # Embedded and searched a batch at a time, and written as they come: memory does not grow
        # with the number of queries. A query that cannot be read is reported and the rest go on.
        files = [(q, str(q)) for q in args.queries]
        for infos, vectors in embed_files(extractor, files, batch_size=args.batch_size, progress=False,
                                          skipped=failed, box=box):
            out.errors(failed)
            boxes = [box] * len(infos)
            if args.auto_box:
                boxes = _auto_boxes(extractor, store, infos, vectors)
            verify = _copy_verifier(stored, infos) if stored else None
            results = rank(store, vectors, args.top_k, intent=args.intent, mode=args.mode, min_score=args.min_score,
                           verify=verify, **options)
            for info, result, used in zip(infos, results, boxes):
                out.result(info.id, result, used)
                if args.sheet and len(sheet_rows) < SHEET_MAX_QUERIES:
                    sheet_rows.append((info.id, result.hits))
        out.errors(failed)
    if args.sheet:
        from .sheet import contact_sheet

        contact_sheet(sheet_rows, root, args.sheet)
        print(f"contact sheet: {args.sheet}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def _copy_verifier(stored, infos):
    """``rank``'s ``verify`` for this batch of query files: their first results checked against their
    pixels (:func:`jiansuo.search.verify.copy_first`); ``stored`` gives the stored images' features."""
    from .features.local import extract
    from .images import ImageError
    from .search.verify import copy_first

    def verify(n: int, hits):
        try:
            query = extract(infos[n].id)
        except ImageError:  # it was embedded, so it was readable: only a file changed since then
            return hits
        return copy_first(hits, query, stored)

    return verify


def _auto_boxes(extractor, store, infos, vectors) -> list:
    """The suggested box of each query (None: searched whole); ``vectors`` are replaced in place by
    the vectors of the boxes."""
    from .autobox import catalogue_scores, suggest_box
    from .pipeline import decode_for, embed_query

    scores = catalogue_scores(store)
    boxes = []
    for n, info in enumerate(infos):
        img = decode_for(extractor, info.id)   # the query's path; it decoded a moment ago
        box = suggest_box(extractor, img, scores, whole=vectors[n])
        if box is not None:
            vectors[n] = embed_query(extractor, img, box)
        boxes.append(box)
    return boxes


class _SearchOutput:
    """Writes each query's results as soon as they are known: text, or one JSON array streamed item by item."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.count = 0
        self._reported = 0

    def __enter__(self) -> "_SearchOutput":
        if self.as_json:
            sys.stdout.write("[")
        return self

    def __exit__(self, *exc) -> None:
        if self.as_json:
            sys.stdout.write("\n]\n" if self.count else "]\n")
        sys.stdout.flush()

    def _json(self, item: dict) -> None:
        sys.stdout.write(("," if self.count else "") + "\n" + json.dumps(item, ensure_ascii=False))
        self.count += 1

    def result(self, query: str, result, box=None) -> None:
        if self.as_json:
            item = {"query": query, "results": [{"id": h.id, "score": round(h.score, 6)} for h in result.hits],
                    "candidates": result.candidates, "mode": result.mode}
            if box is not None:
                item["box"] = str(box)
            self._json(item)
            return
        lines = [f"{query}:" if box is None else f"{query} (box {box}):"] + [f"  {rank:3d}. {h.score:.4f}  {h.id}" for rank, h in enumerate(result.hits, 1)]
        print("\n".join(lines if result.hits else lines + ["  (no results)"]))

    def errors(self, failed: list[tuple[str, str]]) -> None:
        """Report the queries that could not be read since the last call."""
        for query, reason in failed[self._reported:]:
            print(f"jiansuo: error: query {query}: {reason}", file=sys.stderr)
            if self.as_json:
                self._json({"query": query, "error": reason, "results": []})
        self._reported = len(failed)


# --------------------------------------------------------------------------- duplicates


def _add_duplicates(sub) -> None:
    from .search.duplicates import DEFAULT_K, DEFAULT_RULE

    p = sub.add_parser("duplicates", help="groups of near-identical images (re-encoded, resized, cropped, "
                                          "watermarked copies)")
    _index_arg(p)
    p.add_argument("--threshold", type=float, default=DEFAULT_RULE.threshold,
                   help=f"lowest cosine similarity of a reported pair (default {DEFAULT_RULE.threshold}); pairs "
                        f"below {DEFAULT_RULE.accept} must also agree pixel by pixel once aligned (by their frames, "
                        "or by ORB keypoints and RANSAC)")
    p.add_argument("--no-verify", action="store_true",
                   help="accept every pair above --threshold on its cosine alone (no image is read)")
    p.add_argument("--neighbours", type=int, default=DEFAULT_K,
                   help=f"nearest neighbours examined per image (default {DEFAULT_K})")
    p.add_argument("--json", action="store_true",
                   help='print {"groups": [{"ids": [...], "score": S}]}, highest score first')
    p.add_argument("--sheet", type=Path, default=None,
                   help=f"write a contact sheet image of the groups (the first {SHEET_MAX_QUERIES})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_duplicates)


def _cmd_duplicates(args) -> int:
    from dataclasses import replace

    from .search.duplicates import DEFAULT_RULE, find_duplicates

    if not -1 <= args.threshold <= 1:
        raise CLIError("--threshold is a cosine similarity: between -1 and 1")
    if args.neighbours < 1:
        raise CLIError("--neighbours must be at least 1")
    rule = replace(DEFAULT_RULE, threshold=args.threshold, verify=not args.no_verify)
    with _open_store(args.index) as store, _StepBars(disable=args.no_progress) as bars:
        root = store.meta().get("root")
        report = find_duplicates(store, root, rule, k=args.neighbours, progress=bars.update)
    for item, reason in report.skipped:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({"groups": [g.as_dict() for g in report.groups]}, indent=1, ensure_ascii=False))
    else:
        for g in report.groups:
            print(f"{g.score:.4f}  " + "  ".join(g.ids))
        print(f"{len(report.groups)} group(s) of near-identical images ({report.candidates} candidate pairs, "
              f"{report.verified} checked by local features)", file=sys.stderr)
    if args.sheet:
        from .sheet import group_sheet

        group_sheet([(g.score, g.ids) for g in report.groups[:SHEET_MAX_QUERIES]], root, args.sheet)
        print(f"contact sheet: {args.sheet}", file=sys.stderr)
    return EXIT_OK


class _StepBars:
    """One tqdm bar per step of a long job, fed by ``update(step, done, total)`` callbacks."""

    def __init__(self, disable: bool):
        self.disable = disable
        self.bars: dict = {}

    def __enter__(self) -> "_StepBars":
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()

    def update(self, step: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(step)
        if bar is None:
            bar = self.bars[step] = tqdm(total=total, desc=step, unit="", file=sys.stderr, disable=self.disable,
                                         dynamic_ncols=True)
        bar.update(done - bar.n)


# --------------------------------------------------------------------------- info


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="model, size, counts and dates of an index")
    _index_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    with _open_store(args.index) as store:
        stats = store.stats()
        stats["root"] = store.meta().get("root")
    notes = stats.pop("notes", [])
    if args.json:
        print(json.dumps(stats, indent=1, ensure_ascii=False))
        return EXIT_OK
    model = stats["model"]
    print(f"index:      {stats['path']}")
    print(f"model:      {model['name']} (version {model['version']}, {stats['dim']}-d {stats['dtype']})")
    print(f"preprocess: {model.get('preprocessing', '')}")
    print(f"folder:     {stats['root']}")
    print(f"images:     {stats['images']}")
    print(f"memory:     {stats['bytes_per_image_in_memory']} bytes/image for vectors "
          f"({stats['images'] * stats['bytes_per_image_in_memory'] / 2**20:.1f} MiB)")
    segments = f" in {stats['segments']} segment(s)" if "segments" in stats else ""
    print(f"on disk:    {stats['bytes_on_disk'] / 2**20:.1f} MiB{segments}")
    print(f"auto mode:  {stats['auto_mode']} (the ANN index is used from {stats['ann_threshold']:,} images)")
    for line in notes:
        print(line)
    print(f"created:    {stats['created']}")
    print(f"updated:    {stats['updated']}")
    return EXIT_OK


# --------------------------------------------------------------------------- HDF5 compatibility


def _add_export_h5(sub) -> None:
    p = sub.add_parser("export-h5", help="write the original system's featureCNN.h5 layout")
    _index_arg(p)
    p.add_argument("dest", type=Path, help="output .h5 file")
    p.set_defaults(func=_cmd_export_h5)


def _cmd_export_h5(args) -> int:
    from .h5compat import export_h5

    with _open_store(args.index) as store:
        n = export_h5(store, args.dest)
    print(f"wrote {n} features to {args.dest}")
    return EXIT_OK


def _add_import_h5(sub) -> None:
    p = sub.add_parser("import-h5", help="read the original system's featureCNN.h5 into an index")
    p.add_argument("source", type=Path, help="featureCNN.h5 (dataset_1 features, dataset_2 names)")
    _index_arg(p)
    p.add_argument("--model", required=True, help="the model that computed the features (e.g. vgg16)")
    p.add_argument("--root", type=Path, default=None, help="folder the file names are relative to")
    p.set_defaults(func=_cmd_import_h5)


def _cmd_import_h5(args) -> int:
    from .features import model_class
    from .h5compat import import_h5
    from .search import open_store

    model = model_class(args.model).description()
    with open_store(args.index, model=model) as store:
        if args.root:
            store.set_meta("root", str(args.root.resolve()))
        n = import_h5(args.source, store)
        total = len(store)
    print(f"imported {n} features; index {args.index}: {total} images")
    return EXIT_OK


# --------------------------------------------------------------------------- hashing: train-hash / evaluate


def _add_train_hash(sub) -> None:
    p = sub.add_parser("train-hash", help="train binary hash codes for fast search (--mode hash)")
    p.add_argument("labelled", nargs="?", type=Path, default=None,
                   help="folder of labelled photos: LABELLED/<label>/<image> (or use --labels / --unsupervised)")
    _index_arg(p)
    p.add_argument("--labels", type=Path, default=None,
                   help="CSV of path,label rows; path is an index id or an image file (relative to the CSV)")
    p.add_argument("--unsupervised", action="store_true",
                   help="learn codes without labels (ITQ on every indexed image)")
    p.add_argument("--bits", type=int, default=None,
                   help="code length, a multiple of 8 (default: 48 supervised, 128 unsupervised)")
    p.add_argument("--epochs", type=int, default=20, help="supervised training epochs (default 20)")
    p.add_argument("--hidden", type=int, nargs="*", default=[512],
                   help="hidden layer widths of the supervised head (default 512; none: linear)")
    p.add_argument("--rerank", choices=["hidden", "latent", "input"], default=None,
                   help="feature candidates are re-ranked by (default: hidden supervised where it ranked the held-out "
                        "photos better than the stored feature, else input)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_train_hash)


def _cmd_train_hash(args) -> int:
    import time

    from .hashing import labels as labelled
    from .hashing.store import describe

    sources = sum([args.labelled is not None, args.labels is not None, args.unsupervised])
    if sources != 1:
        raise CLIError("give exactly one of: a LABELLED/ folder, --labels labels.csv, or --unsupervised")
    bits = args.bits or (128 if args.unsupervised else 48)
    start = time.perf_counter()
    with _open_store(args.index) as store:
        if len(store) == 0:
            raise CLIError(f"index {args.index} is empty: index some images first")
        skipped: list[tuple[str, str]] = []
        if args.unsupervised:
            from .hashing.itq import ITQ_SAMPLE, train_itq

            layer = train_itq(store.sample(ITQ_SAMPLE, seed=args.seed), bits, seed=args.seed,
                              rerank=args.rerank or "input")
            n_labels = 0
        else:
            from .hashing.train import train_judged

            items = (labelled.from_folder(args.labelled) if args.labelled is not None
                     else labelled.from_csv(args.labels, store))
            feats, labels = labelled.features_for(store, items, lambda: _extractor_for(store, None, None),
                                                  progress=not args.no_progress, skipped=skipped)
            n_labels = len(set(labels))
            layer = train_judged(feats, labels, bits, hidden=tuple(args.hidden), epochs=args.epochs,
                                 seed=args.seed, progress=not args.no_progress,
                                 **({"rerank": args.rerank} if args.rerank else {}))
        coded = store.set_hash_layer(layer, progress=not args.no_progress)
        summary = {**describe(layer), "labels": n_labels, "coded_images": coded,
                   "skipped": [{"path": p, "reason": r} for p, r in skipped],
                   "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
        return EXIT_OK
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    what = f"{layer.kind} {layer.bits}-bit hash layer"
    if layer.kind == "supervised":
        what += (f" on {layer.info['trained_on']} images of {n_labels} labels "
                 f"(training accuracy {layer.info['train_accuracy']:.3f})")
    else:
        what += f" on {layer.info['trained_on']} images (no labels)"
    print(f"trained {what} in {summary['seconds']:.1f}s; codes for {coded} images")
    judged = layer.info.get("judgement")
    if judged:
        print(f"held-out photos ({layer.info['judged_on']}): mAP@100 {judged['expanded']['map100']:.3f} with query "
              f"expansion, {judged['learned']['map100']:.3f} with the learnt feature; searches rank products like "
              f"the query by the {'learnt feature' if layer.info['similar_ranking'] == 'learned' else 'expanded query'}")
    print(f"search with: jiansuo search QUERY --index {args.index} --mode hash")
    return EXIT_OK


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="retrieval quality and speed of the search modes on labelled queries")
    _index_arg(p)
    p.add_argument("--queries", required=True, type=Path,
                   help="labelled query photos: QUERY_DIR/<label>/<image>, or a CSV of path,label")
    p.add_argument("--labels", type=Path, default=None,
                   help="CSV of id,label for the indexed images (default: an id's first folder is its label)")
    p.add_argument("--modes", default=None,
                   help="comma-separated modes (exact first: the reference); 'hamming' is hash without "
                        "re-ranking (default: exact, plus hash and hamming when a hash layer is trained)")
    p.add_argument("--map-k", type=int, default=1000, help="mAP cut-off (default 1000)")
    p.add_argument("--top-k", "-k", type=int, default=10, help="precision/recall cut-off (default 10)")
    p.add_argument("--candidates", type=int, default=None, help="hash: candidates re-ranked per query")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while embedding queries")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate_store, format_reports
    from .hashing import labels as labelled

    if args.map_k < 1 or args.top_k < 1:
        raise CLIError("--map-k and --top-k must be at least 1")
    with _open_store(args.index) as store:
        query_items = (labelled.from_folder(args.queries) if args.queries.is_dir()
                       else labelled.from_csv(args.queries))
        skipped: list[tuple[str, str]] = []
        queries, query_labels = labelled.features_for(store, query_items, lambda: _extractor_for(store, None, None),
                                                      progress=not args.no_progress, skipped=skipped)
        if args.labels is not None:
            root = Path(store.meta().get("root") or Path.cwd()).resolve()
            label_map = {}
            for item in labelled.from_csv(args.labels, store):
                item_id = item.id
                if item_id is None:
                    try:
                        item_id = item.path.resolve().relative_to(root).as_posix()
                    except ValueError:
                        continue
                label_map[item_id] = item.label
            label_of = label_map.get
        else:
            def label_of(item_id: str):
                return item_id.split("/", 1)[0] if "/" in item_id else None
        trained = store.hash_layer() is not None
        names = ([m.strip() for m in args.modes.split(",") if m.strip()] if args.modes
                 else ["exact"] + (["hash", "hamming"] if trained else []))
        hash_opts = {} if args.candidates is None else {"candidates": args.candidates}
        modes = [("hamming", "hash", {"rerank": False}) if m == "hamming"
                 else (m, m, dict(hash_opts) if m == "hash" else {}) for m in names]
        reports = evaluate_store(store, queries, query_labels, label_of, modes, map_k=args.map_k, k=args.top_k)
        n_images = len(store)
    for path, reason in skipped:
        print(f"skipped query {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({"queries": len(query_labels), "images": n_images,
                          "reports": [r.as_dict(args.map_k, args.top_k) for r in reports]}, indent=1))
        return EXIT_OK
    print(f"{len(query_labels)} queries, {len(set(query_labels))} labels; {n_images} catalogue images")
    print(format_reports(reports, args.map_k, args.top_k))
    print(f"(recall@{args.top_k}: share of the {names[0]} search's top {args.top_k} that each mode returns; "
          f"candidates: images whose feature each query was compared with)")
    return EXIT_OK


# --------------------------------------------------------------------------- main

_SUBCOMMANDS = [_add_index, _add_search, _add_duplicates, _add_info, _add_add, _add_remove, _add_export_h5, _add_import_h5,
               _add_train_hash, _add_evaluate]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the docs and tests)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="jiansuo", description="Search product catalogues by image.")
    parser.add_argument("--version", action="version", version=f"jiansuo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jiansuo`` console script."""
    from .features import ModelError
    from .images import ImageError
    from .index import IndexError_

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ModelError, IndexError_, ImageError, NotADirectoryError, FileNotFoundError, ValueError) as exc:
        print(f"jiansuo: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("jiansuo: interrupted; committed work is kept, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
