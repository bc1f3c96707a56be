"""int8 inference for the default model: fidelity per layer and overall, speed, and the hashing figures.

    .venv/bin/python bench/int8.py            # everything (~10 min on 2 cores)
    .venv/bin/python bench/int8.py --quick    # fewer images, no hashing protocol

1. **Per layer.** The float graph (efficientnet-lite0, framed input, max pool) is quantised (ONNX Runtime
   static QDQ: int8 weights per channel, uint8 activations, min/max calibration on the product's own
   calibration photos, :mod:`jiansuo.features.quantize`) with everything in int8, then with one block at
   a time kept in float; each row gives the cosine of the int8 features to the float ones. This is how
   the layers the product keeps in float (``INT8_KEEP_FLOAT``) were chosen.
2. **Speed.** Images/s of the float and int8 networks at batch 1 and 32, interleaved, best of 3 rounds
   (the machine is shared).
3. **Hashing.** The Fashion-MNIST protocol of bench/hashing.py on a subset (database: 10,000 training
   photos, queries: 1,000 test photos) with float and with int8 features: exact search, ITQ-128 and a
   supervised 48-bit layer, coarse to fine. The default can only be int8 if these hold.

Evaluation photos: Fashion-MNIST test photos rendered as product shots (not the calibration set) and
scikit-image's photos cropped and turned (the calibration set has them whole and in other crops).
The section ``<!-- bench/int8 -->`` of bench/RESULTS.md is rewritten; bench/quality.py gives the
retrieval figures of the int8 network (its "shipped default, int8" rows).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from results_md import write_section  # noqa: E402


def cpu_int8() -> str:
    """Which int8 dot-product instructions this CPU has: without VNNI, ONNX Runtime's u8×s8 kernels sum
    pairs of products in 16 bits (why the product's weights are 7-bit, jiansuo.features.quantize)."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "CPU flags unknown"
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return f"VNNI: {', '.join(vnni)}" if vnni else "no VNNI (AVX2" + (", AVX-512" if "avx512f" in flags else "") + ")"


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def evaluation_inputs(extractor, n_products: int) -> np.ndarray:
    from jiansuo.datasets import fashion_mnist
    from jiansuo.demo import product_photo
    from tests.conftest import PHOTO_NAMES, real_photo

    images, _ = fashion_mnist.load("test")
    rng = np.random.default_rng(11)
    colours = [(31, 58, 110), (170, 30, 45), (96, 108, 40), (176, 128, 72), (20, 120, 120), (100, 50, 110)]
    photos = [product_photo(images[i], colours[n % len(colours)])
              for n, i in enumerate(rng.choice(len(images), n_products, replace=False))]
    for name in PHOTO_NAMES:
        img = real_photo(name)
        w, h = img.size
        photos.append(img.crop((w // 7, h // 9, w - w // 11, h - h // 6)).rotate(3, expand=True, fillcolor="white"))
    return np.stack([extractor.preprocess(p) for p in photos])


def features(path: Path, x: np.ndarray) -> np.ndarray:
    from jiansuo.features.base import l2_normalize
    from jiansuo.features.onnx_cache import ort_session

    session = ort_session(path)
    out = np.concatenate([session.run(None, {"input": x[s : s + 64]})[0] for s in range(0, len(x), 64)])
    return l2_normalize(out)


def per_layer(float_path: Path, extractor, x: np.ndarray, shipped: tuple[str, ...], workdir: Path) -> list[dict]:
    import onnx

    from jiansuo.features.quantize import quantize

    names = [n.name for n in onnx.load(str(float_path)).graph.node]
    blocks = sorted({int(n.split("_blocks.")[1].split("/")[0]) for n in names if "_blocks." in n})
    configs = [("everything int8", ()), ("stem in float", ("/_conv_stem/", "/_swish/Clip"))]
    configs += [(f"block {b} in float", (f"/_blocks.{b}/",)) for b in blocks]
    configs += [("head in float", ("/_conv_head/", "/_swish_1/Clip")), ("shipped: stem + blocks 0-1 in float", shipped)]
    ref = features(float_path, x)
    rows = []
    for label, keep in configs:
        out = workdir / "q.onnx"
        t = time.perf_counter()
        try:
            quantize(float_path, out, extractor.preprocess, keep)
            cos = np.sum(features(out, x) * ref, axis=1)
        except Exception as exc:  # ONNX Runtime's quantiser makes an invalid graph for some of these
            rows.append({"label": label, "error": str(exc).split("Error:")[-1].strip()[:90]})
            log(f"  {label}: {rows[-1]['error']}")
            continue
        rows.append({"label": label, "median": float(np.median(cos)), "p5": float(np.percentile(cos, 5)),
                     "min": float(cos.min()), "seconds": time.perf_counter() - t})
        log(f"  {label}: median {rows[-1]['median']:.4f}, min {rows[-1]['min']:.4f}")
    return rows


def speed(paths: dict[str, Path], size: int = 224, rounds: int = 3) -> dict[tuple[str, int], float]:
    from jiansuo.features.onnx_cache import ort_session

    sessions = {k: ort_session(p) for k, p in paths.items()}
    xs = {b: np.random.default_rng(0).standard_normal((b, 3, size, size)).astype(np.float32) for b in (1, 32)}
    best = {(k, b): 0.0 for k in sessions for b in xs}
    for _ in range(rounds):
        for b, x in xs.items():
            for k, s in sessions.items():
                s.run(None, {"input": x})
                n, t = 0, time.perf_counter()
                while time.perf_counter() - t < 2.0:
                    s.run(None, {"input": x})
                    n += b
                best[(k, b)] = max(best[(k, b)], n / (time.perf_counter() - t))
    return best


def hashing_protocol(n_db: int, per_class: int) -> list[dict]:
    """Fashion-MNIST, float vs int8 features: exact, ITQ-128 and supervised-48 coarse to fine (mAP@1000, P@10)."""
    from PIL import Image

    from jiansuo.datasets import fashion_mnist
    from jiansuo.evaluation import evaluate_search
    from jiansuo.features import get_extractor
    from jiansuo.hashing.itq import train_itq
    from jiansuo.hashing.train import train_supervised
    from jiansuo.index import ItemInfo
    from jiansuo.search.folder import FolderStore

    xtr_img, ytr = fashion_mnist.load("train")
    xte_img, yte = fashion_mnist.load("test")
    rng = np.random.default_rng(0)
    db_rows = np.sort(rng.choice(len(ytr), n_db, replace=False))
    q_rows = fashion_mnist.query_sample(yte, per_class=per_class)
    rows = []
    for precision in ("fp32", "int8"):
        ex = get_extractor(precision=precision)
        t = time.perf_counter()
        db = ex.embed_images([Image.fromarray(xtr_img[i]).convert("RGB") for i in db_rows], batch_size=64)
        q = ex.embed_images([Image.fromarray(xte_img[i]).convert("RGB") for i in q_rows], batch_size=64)
        log(f"  {precision}: embedded {len(db) + len(q)} photos in {time.perf_counter() - t:.0f} s")
        labels = [str(ytr[i]) for i in db_rows]
        with tempfile.TemporaryDirectory() as tmp, FolderStore.open(Path(tmp) / "f.idx", model=ex.describe()) as store:
            store.add([ItemInfo(f"{lab}/{n:05d}") for n, lab in enumerate(labels)], db)
            layers = {"ITQ 128": train_itq(db, 128), "supervised 48": train_supervised(db, labels, 48, progress=False)}
            for name, layer in [("exact", None), *layers.items()]:
                if layer is not None:
                    store.set_hash_layer(layer)
                mode = "exact" if layer is None else "hash"
                report, _ = evaluate_search(lambda qq, k: store.search(qq, k, mode=mode), q,
                                            [str(c) for c in yte[q_rows]], lambda i: i.split("/")[0], map_k=1000, k=10)
                rows.append({"precision": precision, "search": name if layer is None else f"{name}, coarse to fine",
                             "map": report.map_at_k, "p10": report.precision_at_k})
                log(f"  {precision} {rows[-1]['search']}: mAP@1000 {report.map_at_k:.4f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from jiansuo.features import get_extractor
    from jiansuo.features.efficientnet import INT8_KEEP_FLOAT

    stamp, load0 = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
    fp32, int8 = get_extractor(precision="fp32"), get_extractor(precision="int8")  # the default is int8
    paths = {"fp32": fp32.onnx_path, "int8": int8.onnx_path}
    x = evaluation_inputs(fp32, 60 if args.quick else 300)
    with tempfile.TemporaryDirectory(prefix="jiansuo-int8-") as tmp:
        log("per layer...")
        layers = per_layer(paths["fp32"], fp32, x, INT8_KEEP_FLOAT, Path(tmp))
    log("speed...")
    rates = speed(paths)
    hashing = [] if args.quick else hashing_protocol(10_000, 100)

    lines = ["## int8 inference for the default model (`bench/int8.py`)", "",
             f"`.venv/bin/python bench/int8.py{' --quick' if args.quick else ''}` — {stamp}, {platform.machine()}, "
             f"{os.cpu_count()} cores, {cpu_int8()}, load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at the end. "
             f"Evaluation: {len(x)} photos ({len(x) - 12} Fashion-MNIST test products rendered as product shots, 12 "
             "scikit-image photos cropped and turned), none of them in the calibration set.", "",
             "Cosine of the int8 features to the float features, by what stays in float (ONNX Runtime static QDQ, "
             "int8 weights per channel on 7 bits, uint8 activations, min/max calibration; pooling and the classifier always "
             "in float):", "",
             "| int8 network | median | 5th percentile | min | quantisation (s) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['median']:.4f} | {r['p5']:.4f} | {r['min']:.4f} | {r['seconds']:.0f} |"
              if "error" not in r else f"| {r['label']} | invalid graph from the quantiser: {r['error']} | | | |"
              for r in layers]
    lines += ["", "Speed of the network alone (ONNX Runtime, all cores; best of 3 interleaved rounds of 2 s):", "",
              "| network | batch 1, images/s | batch 1, ms/image | batch 32, images/s |", "|---|---:|---:|---:|"]
    for k in ("fp32", "int8"):
        lines.append(f"| {k} | {rates[(k, 1)]:.1f} | {1000 / rates[(k, 1)]:.2f} | {rates[(k, 32)]:.1f} |")
    lines += ["", f"int8 / fp32: {rates[('int8', 1)] / rates[('fp32', 1)]:.2f}x at batch 1, "
              f"{rates[('int8', 32)] / rates[('fp32', 32)]:.2f}x at batch 32."]
    if hashing:
        lines += ["", "Hashing figures, Fashion-MNIST (database 10,000 training photos, 1,000 test queries, relevant = "
                  "same class; ITQ 128 bits and a supervised 48-bit layer trained on the database's labels, searched "
                  "coarse to fine as `--mode hash`):", "",
                  "| search | fp32 mAP@1000 | int8 mAP@1000 | difference | fp32 P@10 | int8 P@10 |",
                  "|---|---:|---:|---:|---:|---:|"]
        by = {(r["precision"], r["search"]): r for r in hashing}
        for search in dict.fromkeys(r["search"] for r in hashing):
            a, b = by[("fp32", search)], by[("int8", search)]
            lines.append(f"| {search} | {a['map']:.4f} | {b['map']:.4f} | {b['map'] - a['map']:+.4f} | "
                         f"{a['p10']:.4f} | {b['p10']:.4f} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write and not args.quick:
        write_section("int8", text)


if __name__ == "__main__":
    main()
