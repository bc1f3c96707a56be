"""Indexing throughput and query latency: jiansuo's extractors next to the original system's method.

    .venv/bin/python bench/extract.py                # 300 JPEGs, query latency at 10k and 100k
    .venv/bin/python bench/extract.py --images 1000 --no-int8    # no vgg16 int8 row

What it measures, all in one run on the same JPEG files (800×800, made from real photos: the
scikit-image sample photos and Fashion-MNIST products, randomly cropped and upscaled):

- end-to-end indexing rate (files on disk → parallel decode → batched network → index on disk)
  of ``efficientnet-lite0`` at its default precision (int8) and at fp32
  (:func:`jiansuo.pipeline.sync_folder` on the whole folder, once before and once after the rest)
  and ``vgg16`` at fp32 and int8 (:func:`jiansuo.pipeline.add_files`, the pipeline's embedding
  and commit path);
- the original system's method: Keras ``VGG16(include_top=False, pooling='max')`` with
  ``load_img`` + ``preprocess_input`` + ``model.predict`` once per image, as its ``index.py`` does
  (needs ``pip install tensorflow-cpu``; skipped otherwise). Random weights: speed does not
  depend on them. The same weights are saved as a Keras .h5 and given to jiansuo's ``vgg16``,
  so the run also checks that both compute the same features. The original and both ``vgg16``
  precisions take turns on chunks of the same images, so a change in the machine's load during
  the run hits them alike;
- query latency, one image → JSON results, with 10k and 100k images indexed (the catalogue's
  real vectors plus synthetic ones scattered around them): warm (model loaded, as the site
  runs) and cold (a fresh ``jiansuo search --json`` process).

Figures go to stdout and to this script's own section of bench/RESULTS.md. Timings on a shared
machine are noisy: the load average before and after is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jiansuo.features import get_extractor  # noqa: E402
from jiansuo.images import load_image  # noqa: E402
from jiansuo.index import Index, ItemInfo  # noqa: E402
from jiansuo.pipeline import add_files, embed_query, sync_folder  # noqa: E402
from jiansuo.search.folder import FolderStore  # noqa: E402
from results_md import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "stereo_motorcycle", "camera", "horse")
SIDE = 800


# ----------------------------------------------------------------------------- test images


def _photos() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in PHOTOS:
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
        out.append(np.asarray(Image.fromarray(img).convert("RGB")))
    return out


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct 800×800 JPEGs: random crops of real photos, and Fashion-MNIST products on white."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    try:
        from jiansuo.datasets import fashion_mnist

        products = fashion_mnist.load("test")[0]
    except Exception:  # the dataset is optional here: photos alone are fine
        products = None
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        if products is not None and i % 2:
            grey = 255 - products[rng.integers(len(products))]
            img = Image.fromarray(grey).convert("RGB").resize((SIDE, SIDE), Image.BICUBIC)
        else:
            src = photos[rng.integers(len(photos))]
            h, w = src.shape[:2]
            ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            img = Image.fromarray(src[y : y + ch, x : x + cw]).resize((SIDE, SIDE), Image.BICUBIC)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / f"{i // 100:02d}" / f"item{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        img.save(path, quality=90)
        paths.append(path)
    return paths


def decode_ms(paths: list[Path], draft: int | None) -> float:
    """Mean single-thread decode time per file, in ms."""
    start = time.perf_counter()
    for p in paths:
        load_image(p, draft_size=draft)
    return 1000 * (time.perf_counter() - start) / len(paths)


# ----------------------------------------------------------------------------- the original method


def keras_available() -> bool:
    try:
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
    except ImportError:
        return False
    return True


def keras_baseline_model(weights_out: Path):
    """The original's model with random weights; also saved (legacy HDF5) for jiansuo's vgg16."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras.applications import VGG16

    keras.utils.set_random_seed(0)
    model = VGG16(weights=None, include_top=False, pooling="max", input_shape=(224, 224, 3))
    # Glorot init leaves biases at zero; give them values so the feature check covers them.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    model.save(weights_out)  # ".h5": Keras's legacy HDF5 layout (model_weights/<layer>/...)
    model.predict(np.zeros((1, 224, 224, 3)), verbose=0)  # the warm-up the original's VGGNet() does
    return model


def run_baseline(model, paths: list[Path]) -> tuple[float, np.ndarray]:
    """The original index.py loop: per image load_img, preprocess_input, predict. Returns (seconds, features)."""
    from keras.applications.vgg16 import preprocess_input
    from keras.preprocessing import image

    feats = []
    start = time.perf_counter()
    for p in paths:
        img = image.load_img(p, target_size=(224, 224))
        x = preprocess_input(np.expand_dims(image.img_to_array(img), axis=0))
        feat = model.predict(x, verbose=0)
        feats.append(feat[0] / np.linalg.norm(feat[0]))
    return time.perf_counter() - start, np.stack(feats)


def random_keras_weights(path: Path) -> None:
    """Without TensorFlow: random VGG16 conv weights in Keras's layout, written with h5py."""
    import h5py

    from jiansuo.features.vgg16 import CONV_LAYERS

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name, _, _ in CONV_LAYERS]
        for name, cin, cout in CONV_LAYERS:
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            g[f"{name}/kernel:0"] = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)).astype(np.float32)
            g[f"{name}/bias:0"] = rng.normal(0, 0.1, cout).astype(np.float32)


# ----------------------------------------------------------------------------- jiansuo


def inference_rate(extractor, paths: list[Path], batch: int = 32, min_seconds: float = 5.0) -> float:
    """Network alone, on preprocessed batches already in memory: images/s."""
    x = np.stack([extractor.preprocess(load_image(p, draft_size=extractor.draft_size)) for p in paths[:batch]])
    extractor.embed_batch(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        extractor.embed_batch(x)
        done += len(x)
    return done / (time.perf_counter() - start)


def run_indexing(extractor, folder: Path, index_path: Path) -> float:
    """A new index of ``folder``, end to end through :func:`sync_folder`; returns images/s."""
    with Index.create(index_path, extractor.describe()) as index:
        report = sync_folder(FolderStore(index), folder, extractor, progress=False)
    if report.skipped:
        raise RuntimeError(f"benchmark images were skipped: {report.skipped[:3]}")
    return report.rate


# ----------------------------------------------------------------------------- queries


def synthetic_index(path: Path, extractor, real_ids: list[str], real: np.ndarray, size: int, seed: int = 0) -> Index:
    """``size`` vectors: the real ones, plus noisy copies of them (cosine ~0.9 to their source)."""
    rng = np.random.default_rng(seed)
    index = Index.create(path, extractor.describe())
    index.add(real, [ItemInfo(i) for i in real_ids])
    dim = real.shape[1]
    made, chunk = len(real_ids), 20_000
    while made < size:
        n = min(chunk, size - made)
        base = real[rng.integers(len(real), size=n)]
        vecs = base + rng.normal(0, 0.5 / np.sqrt(dim), (n, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        index.add(vecs, [ItemInfo(f"synthetic/{made + j:07d}.jpg") for j in range(n)])
        made += n
    return index


def query_latency(extractor, index_path: Path, query: Path, repeats: int) -> dict:
    """Warm (model loaded, index open) and first-query timings for one image → JSON, in ms."""
    with Index.open(index_path) as index:
        t0 = time.perf_counter()
        vec = embed_query(extractor, query)[None]
        json.dumps(_as_json(query, FolderStore(index).search(vec, 10)[0]))
        first = time.perf_counter() - t0
        embed, search = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            vec = embed_query(extractor, query)[None]
            t1 = time.perf_counter()
            out = json.dumps(_as_json(query, FolderStore(index).search(vec, 10)[0]))
            t2 = time.perf_counter()
            embed.append(t1 - t0)
            search.append(t2 - t1)
    total = [a + b for a, b in zip(embed, search)]
    return {"first_ms": 1000 * first, "warm_ms": 1000 * statistics.median(total),
            "embed_ms": 1000 * statistics.median(embed), "search_ms": 1000 * statistics.median(search),
            "top": json.loads(out)[0]["results"][0]["id"]}


def _as_json(query: Path, result) -> list[dict]:
    return [{"query": str(query), "results": [{"id": h.id, "score": round(h.score, 6)} for h in result.hits]}]


def cli_latency(index_path: Path, query: Path, weights: Path | None, repeats: int = 3) -> float:
    """A fresh `jiansuo search QUERY --index I --json` process, wall time in ms (median)."""
    cmd = [sys.executable, "-m", "jiansuo.cli", "search", str(query), "--index", str(index_path), "--json"]
    if weights:
        cmd += ["--weights", str(weights)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=300, help="JPEGs to index (default 300)")
    ap.add_argument("--sizes", default="10000,100000", help="index sizes for query latency")
    ap.add_argument("--repeats", type=int, default=20, help="warm queries per measurement")
    ap.add_argument("--chunk", type=int, default=50, help="images per turn when vgg16 and the original alternate")
    ap.add_argument("--no-baseline", action="store_true", help="skip the Keras per-image baseline")
    ap.add_argument("--no-int8", action="store_true", help="skip the vgg16 int8 row")
    ap.add_argument("--workdir", type=Path, default=None, help="keep images and indexes here (default: a temp dir)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="jiansuo-bench-extract-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        lines = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    if not args.no_write:
        write_section("extract", "\n".join(lines), args.results)
        print(f"\nwritten to {args.results}")
    return 0


def run(args, workdir: Path) -> list[str]:
    load_before = os.getloadavg()
    folder = workdir / "photos"
    print(f"making {args.images} JPEGs ({SIDE}x{SIDE}) in {folder} ...", file=sys.stderr)
    paths = make_jpegs(folder, args.images)
    ids = [p.relative_to(folder).as_posix() for p in paths]
    dec_full, dec_draft = decode_ms(paths[:50], None), decode_ms(paths[:50], 224)

    weights = workdir / "vgg16_random_notop.h5"
    keras_model = None
    if not args.no_baseline and keras_available():
        keras_model = keras_baseline_model(weights)
    else:
        random_keras_weights(weights)

    rows: list[tuple[str, str, str, str]] = []  # method, images/s, network alone, note
    extractors, loads = {}, {}
    # The default (efficientnet-lite0 at its default precision, int8) and each model at the other one;
    # model load includes making the int8 graph when it is not cached yet.
    variants = [("efficientnet-lite0", None), ("efficientnet-lite0-fp32", "fp32"), ("vgg16", "fp32")]
    if not args.no_int8:
        variants.append(("vgg16-int8", "int8"))
    for key, precision in variants:
        name = key.split("-fp32")[0].split("-int8")[0]
        t0 = time.perf_counter()
        extractors[key] = get_extractor(name, weights=weights if name == "vgg16" else None, precision=precision)
        loads[key] = time.perf_counter() - t0
    net = {name: inference_rate(e, paths) for name, e in extractors.items()}

    # EfficientNet is quick: the whole folder through sync_folder, before and after the rest.
    eff_rates: dict[str, list[float]] = {"efficientnet-lite0": [], "efficientnet-lite0-fp32": []}

    def run_efficientnet(turn: int) -> None:
        for key, rates in eff_rates.items():
            print(f"{key} ...", file=sys.stderr)
            rates.append(run_indexing(extractors[key], folder, workdir / f"{key}-{turn}.idx"))

    run_efficientnet(1)

    # vgg16, its int8 copy and the original method share the CPU with whatever else runs here, and
    # that load drifts: so they take turns on the same chunks of images, and each sums its own time.
    vgg_like = [n for n in ("vgg16", "vgg16-int8") if n in extractors]
    indexes = {n: Index.create(workdir / f"{n}.idx", extractors[n].describe()) for n in vgg_like}
    seconds = dict.fromkeys(vgg_like + (["original"] if keras_model else []), 0.0)
    base_feats = []
    for start in range(0, len(paths), args.chunk):
        chunk = list(zip(paths[start : start + args.chunk], ids[start : start + args.chunk]))
        print(f"images {start}-{start + len(chunk)}: {', '.join(seconds)} ...", file=sys.stderr)
        if keras_model is not None:
            sec, feats = run_baseline(keras_model, [p for p, _ in chunk])
            seconds["original"] += sec
            base_feats.append(feats)
        for n in vgg_like:
            t0 = time.perf_counter()
            added = add_files(FolderStore(indexes[n]), chunk, extractors[n], progress=False)
            seconds[n] += time.perf_counter() - t0
            if added != len(chunk):
                raise RuntimeError(f"{n}: benchmark images were skipped")

    run_efficientnet(2)

    rate = {n: len(paths) / s for n, s in seconds.items()}
    baseline = rate.get("original")
    vectors = {}
    for n, index in indexes.items():
        vectors[n] = index.get_vectors(ids)
        index.close()

    def vs_original(r: float) -> str:
        return f"; {r / baseline:.1f}x the original" if baseline else ""

    if baseline:
        import keras
        import tensorflow as tf

        rows.append(("original: Keras VGG16, predict per image", f"{baseline:.2f}", "",
                     f"tensorflow-cpu {tf.__version__}, keras {keras.__version__}"))
    for key, label in (("efficientnet-lite0", "jiansuo efficientnet-lite0 (default: int8)"),
                       ("efficientnet-lite0-fp32", "jiansuo efficientnet-lite0 --precision fp32")):
        r = eff_rates[key]
        rows.append((label, f"{statistics.mean(r):.1f}", f"{net[key]:.1f}",
                     f"runs before/after the rest: {r[0]:.1f} / {r[1]:.1f}; model load "
                     f"{loads[key]:.1f}s" + vs_original(statistics.mean(r))))
    rows.append(("jiansuo vgg16", f"{rate['vgg16']:.2f}", f"{net['vgg16']:.2f}",
                 f"model load {loads['vgg16']:.1f}s" + vs_original(rate["vgg16"])))
    int8_note = ""
    if "vgg16-int8" in rate:
        cos = (vectors["vgg16-int8"] * vectors["vgg16"]).sum(axis=1)
        rows.append(("jiansuo vgg16 --precision int8", f"{rate['vgg16-int8']:.2f}",
                     f"{net['vgg16-int8']:.2f}", f"cosine to fp32 vgg16: min {cos.min():.4f}, "
                     f"median {np.median(cos):.4f}" + vs_original(rate["vgg16-int8"])))
        int8_note = ("vgg16 int8: the product's quantisation (jiansuo.features.quantize: static QDQ, per-channel "
                     "int8 weights, uint8 activations, calibrated on scikit-image photos) of the random-weight "
                     "graph used here; tests/test_vgg16.py checks its fidelity with the weights the tests build")

    fidelity = ""
    if base_feats:
        base = np.concatenate(base_feats)
        cos = (vectors["vgg16"] * base).sum(axis=1)
        fidelity = (f"jiansuo vgg16 vs the original's features on all {len(paths)} images (same weights): "
                    f"min cosine {cos.min():.7f}, max |difference| {np.abs(vectors['vgg16'] - base).max():.1e}")

    # Query latency.
    qrows = []
    sizes = [int(s) for s in args.sizes.split(",") if s]
    query = paths[0]
    for name in ("efficientnet-lite0", "vgg16"):
        ext = extractors[name]
        with Index.open(workdir / ("efficientnet-lite0-2.idx" if name == "efficientnet-lite0" else "vgg16.idx")) as index:
            real_ids, real = index.vectors()
        for size in sizes:
            print(f"query latency {name} @ {size} ...", file=sys.stderr)
            path = workdir / f"{name}-{size}.idx"
            synthetic_index(path, ext, real_ids, real, size).close()
            lat = query_latency(ext, path, query, args.repeats)
            cold = cli_latency(path, query, weights if name == "vgg16" else None)
            qrows.append((name, f"{size:,}", f"{lat['warm_ms']:.1f}", f"{lat['embed_ms']:.1f}",
                          f"{lat['search_ms']:.1f}", f"{lat['first_ms']:.0f}", f"{cold:.0f}",
                          "yes" if lat["top"] == ids[0] else "NO"))
            shutil.rmtree(path, ignore_errors=True)

    load_after = os.getloadavg()
    return report_lines(args, rows, qrows, dec_full, dec_draft, fidelity, int8_note, load_before, load_after,
                        len(paths))


def report_lines(args, rows, qrows, dec_full, dec_draft, fidelity, int8_note, load_before, load_after, n) -> list[str]:
    import onnxruntime

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    cmd = ".venv/bin/python bench/extract.py" + (f" --images {args.images}" if args.images != 300 else "")
    out = [
        "## Feature extraction: indexing throughput and query latency (bench/extract.py)",
        "",
        f"`{cmd}` (the original method needs `pip install tensorflow-cpu`) — "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}. "
        f"Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(a shared machine: other jobs were running, so absolute rates are noisy; the rows were measured "
        "one after another in the same run).",
        "",
        f"{n} JPEGs, {SIDE}x{SIDE}, from real photos (scikit-image samples, Fashion-MNIST products). "
        f"Decoding one takes {dec_full:.1f} ms at full size, {dec_draft:.1f} ms with JPEG draft mode "
        "(efficientnet-lite0 uses draft mode; vgg16 decodes at full size, as the original did).",
        "",
        "| method | end to end, images/s | network alone, images/s (batch 32) | notes |",
        "|---|---:|---:|---|",
        *[f"| {a} | {b} | {c or '–'} | {d} |" for a, b, c, d in rows],
        "",
    ]
    if fidelity:
        out += [fidelity + ".", ""]
    if int8_note:
        out += [int8_note + ".", ""]
    out += [
        "Query latency, one image → JSON results (top 10), exact search; the index holds the real vectors "
        "plus synthetic ones near them:",
        "",
        "| model | indexed | warm query, ms | of which embed, ms | search + JSON, ms | first query after open, ms "
        "| `jiansuo search --json` process, ms | finds the query first |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|",
        *[f"| {' | '.join(r)} |" for r in qrows],
    ]
    return out


if __name__ == "__main__":
    sys.exit(main())
