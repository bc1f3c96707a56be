"""The ``jiansuo`` command line: index a folder of product photos, search it by image, inspect it.

Each subcommand has an ``_add_<name>`` function that declares its arguments and a ``_cmd_<name>``
function that runs it; ``main`` wires them together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CLIError(Exception):
    """A user-facing error: printed as 'jiansuo: error: ...' without a traceback."""


# --------------------------------------------------------------------------- shared helpers


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, type=Path, help="index folder (e.g. catalog.idx)")


def _model_args(p: argparse.ArgumentParser, default: str | None) -> None:
    from .features.base import DEFAULT_MODEL

    p.add_argument("--model", default=default,
                   help=f"feature extractor (default: {DEFAULT_MODEL} for a new index, else the index's own)")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights file for models that need one (vgg16: Keras .h5 or torchvision .pth; "
                        "or set JIANSUO_VGG16_WEIGHTS)")


def _open_index(path: Path):
    from .index import Index

    return Index.open(path)


def _extractor_for(index, model: str | None, weights: Path | None):
    """The extractor an existing index was built with; a different ``--model`` is a clear error."""
    from .features import get_extractor

    name = index.model["name"]
    if model and model != name:
        raise CLIError(f"index {index.path} was built with --model {name}; "
                       f"it cannot be searched or extended with {model}")
    weights = weights or index.meta().get("weights") or None
    extractor = get_extractor(name, weights=weights)
    index.check_model(extractor.describe())
    return extractor


# --------------------------------------------------------------------------- index


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="index every image under a folder (later runs: only what changed)")
    p.add_argument("folder", type=Path, help="folder of product photos, searched recursively")
    _index_arg(p)
    _model_args(p, None)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage type of the vectors in a new index (float16 halves memory)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: CPU count)")
    p.add_argument("--commit-every", type=int, default=1024,
                   help="images per commit: an interrupted run loses at most this many (default 1024)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_index)


def _cmd_index(args) -> int:
    from .features import DEFAULT_MODEL, get_extractor
    from .index import Index
    from .pipeline import sync_folder

    if not args.folder.is_dir():
        raise CLIError(f"{args.folder} is not a folder")
    if Index.exists(args.index):
        index = _open_index(args.index)
        extractor = _extractor_for(index, args.model, args.weights)
    else:
        extractor = get_extractor(args.model or DEFAULT_MODEL, weights=args.weights)
        index = Index.create(args.index, extractor.describe(), dtype=args.dtype)
    with index:
        index.set_meta("root", str(args.folder.resolve()))
        if args.weights:
            index.set_meta("weights", str(args.weights.resolve()))
        report = sync_folder(index, args.folder, extractor, batch_size=args.batch_size,
                             commit_every=args.commit_every, workers=args.workers,
                             progress=not args.no_progress)
        from .index.ann_store import refresh

        refresh(index, progress=not args.no_progress)  # large indexes: graph up to date before the first search
        total = len(index)
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

    with _open_index(args.index) as index:
        root = (args.root or Path(index.meta().get("root") or Path.cwd())).resolve()
        files = []
        for f in args.files:
            path = f.resolve()
            try:
                files.append((path, relative_id(path, root)))
            except ValueError:
                raise CLIError(f"{f} is not under the catalogue folder {root} (use --root)") from None
        extractor = _extractor_for(index, args.model, args.weights)
        skipped: list[tuple[str, str]] = []
        added = add_files(index, files, extractor, progress=False, skipped=skipped)
        for item_id, reason in skipped:
            print(f"skipped {item_id}: {reason}", file=sys.stderr)
        print(f"added {added}, skipped {len(skipped)}; index {args.index}: {len(index)} images")
    return EXIT_OK if not skipped else EXIT_ERROR


def _add_remove(sub) -> None:
    p = sub.add_parser("remove", help="remove images from the index (by id or by path)")
    p.add_argument("items", nargs="+", help="image ids (paths relative to the catalogue folder) or file paths")
    _index_arg(p)
    p.set_defaults(func=_cmd_remove)


def _cmd_remove(args) -> int:
    with _open_index(args.index) as index:
        root = Path(index.meta().get("root") or Path.cwd())
        ids = []
        for item in args.items:
            path = Path(item)
            if item not in index and path.exists():
                try:
                    item = path.resolve().relative_to(root.resolve()).as_posix()
                except ValueError:
                    pass
            ids.append(item)
        removed = index.remove(ids)
        missing = len(ids) - removed
        print(f"removed {removed}" + (f", {missing} not in the index" if missing else "")
              + f"; index {args.index}: {len(index)} images")
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
                        "or a trained/ built one")
    p.add_argument("--ef", type=int, default=None,
                   help="ann: graph search beam width, higher is more accurate and slower (default 64)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sheet", type=Path, default=None, help="write a contact sheet image of the results")
    p.set_defaults(func=_cmd_search)


def _search_options(args) -> dict:
    """Mode-specific options from the command line (modes add their own arguments)."""
    options = {}
    if args.ef is not None:
        options["ef"] = args.ef
    return options


def _cmd_search(args) -> int:
    from .pipeline import embed_paths
    from .search import search_index

    if args.top_k < 1:
        raise CLIError("--top-k must be at least 1")
    with _open_index(args.index) as index:
        extractor = _extractor_for(index, args.model, args.weights)
        queries = embed_paths(extractor, args.queries)
        results = search_index(index, queries, args.top_k, mode=args.mode, min_score=args.min_score,
                               **_search_options(args))
        root = index.meta().get("root")
    if args.json:
        out = [{"query": str(q), "results": [{"id": h.id, "score": round(h.score, 6)} for h in r.hits],
                "candidates": r.candidates} for q, r in zip(args.queries, results)]
        print(json.dumps(out, ensure_ascii=False, indent=1))
    else:
        for q, r in zip(args.queries, results):
            print(f"{q}:")
            for rank, h in enumerate(r.hits, 1):
                print(f"  {rank:3d}. {h.score:.4f}  {h.id}")
            if not r.hits:
                print("  (no results)")
    if args.sheet:
        from .sheet import contact_sheet

        contact_sheet([(q, r.hits) for q, r in zip(args.queries, results)], root, args.sheet)
        print(f"contact sheet: {args.sheet}", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- info


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="model, size, counts and dates of an index")
    _index_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from .index.ann_store import info as ann_info
    from .search.ann import info_lines

    with _open_index(args.index) as index:
        stats = index.stats()
        meta = index.meta()
        stats["ann"], ann_lines = ann_info(index), info_lines(index)
    stats["root"] = meta.get("root")
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
    print(f"on disk:    {stats['bytes_on_disk'] / 2**20:.1f} MiB in {stats['segments']} segment(s)")
    for line in ann_lines:
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

    with _open_index(args.index) as index:
        n = export_h5(index, args.dest)
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
    from .index import Index

    model = model_class(args.model).describe()
    with Index.open_or_create(args.index, model) as index:
        if args.root:
            index.set_meta("root", str(args.root.resolve()))
        n = import_h5(args.source, index)
        total = len(index)
    print(f"imported {n} features; index {args.index}: {total} images")
    return EXIT_OK


# --------------------------------------------------------------------------- main

_SUBCOMMANDS = [_add_index, _add_search, _add_info, _add_add, _add_remove, _add_export_h5, _add_import_h5]


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
