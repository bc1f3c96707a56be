"""Export a PyTorch network to ONNX once, cache it on disk with a checksum, and run it with ONNX Runtime.

ONNX Runtime runs these CNNs several times faster than eager PyTorch on a CPU, and a cached
.onnx file means torch is only imported the first time a model is used on a machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

from .. import config
from ..atomic import atomic_path, atomic_write
from .base import ModelError

# Bump when the export itself changes (opset, graph surgery) so stale cache files are rebuilt.
EXPORT_VERSION = "2"


def file_identity(path: str | os.PathLike) -> str:
    """Cheap fingerprint of a weights file (path, size, mtime): changes when the file is replaced."""
    st = os.stat(path)
    raw = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_onnx(
    name: str, source_key: str, build: Callable[[], "object"], input_size: int,
    output_names: tuple[str, ...] = ("output",),
) -> Path:
    """Path of a valid cached ONNX export of ``build()``; exports it if missing, stale or corrupt.

    ``source_key`` identifies the weights (and anything else the graph depends on): a different
    key means a different file, so replacing the weights regenerates the export.
    """
    key = f"{source_key}|{EXPORT_VERSION}|{input_size}|{output_names}"
    return cached_model_file(name, key, lambda dest: _export(build, dest, input_size, output_names),
                             {"source_key": source_key, "export_version": EXPORT_VERSION, "input_size": input_size})


def cached_model_file(name: str, key: str, make: Callable[[Path], None], info: dict | None = None) -> Path:
    """A model file in the cache, made once by ``make(path)`` (an export, a quantization) and checked by
    its SHA-256 on every use: a missing, stale (other ``key``) or damaged file is made again."""
    folder = config.cache_dir() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        try:
            if json.loads(meta_path.read_text()).get("sha256") == sha256_file(path):
                return path
        except (OSError, ValueError):
            pass  # unreadable metadata: fall through and make it again
    make(path)
    atomic_write(meta_path, json.dumps({"name": name, **(info or {}), "sha256": sha256_file(path)}, indent=1))
    return path


def _export(build: Callable[[], "object"], dest: Path, input_size: int, output_names: tuple[str, ...]) -> None:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency, but be clear if it is gone
        raise ModelError("PyTorch is needed once to export the model to ONNX: pip install torch") from exc
    model = build()
    model.eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    with atomic_path(dest) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns about constant folding and its own deprecation on every
        # export; neither concerns the user, and the exported graph is checked by its checksum.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), str(tmp), input_names=["input"], output_names=list(output_names),
            dynamic_axes={"input": {0: "batch"}, **{o: {0: "batch"} for o in output_names}},
            opset_version=17, dynamo=False,
        )


def ort_session(onnx_path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session for ``onnx_path`` with graph optimisations on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or config.threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
