"""One network call for queries that arrive together: a server's request threads share batches.

A CNN runs a batch of 8 images in much less than 8 times the time of one, so a web process whose
threads embed one query photo each serves more queries per second when their photos go through
the network together. :class:`BatchingExtractor` wraps an extractor: each thread's
:meth:`~BatchingExtractor.embed_batch` call is queued, one runner thread takes everything queued
(waiting up to ``wait_ms`` for more once a first photo is in, at most ``max_batch`` photos), runs one
inference, and hands each caller its rows. With no wait (the default), a photo alone is embedded at
once, and photos that arrive while the network runs share the next call: batches form only under
load (``bench/site_load.py`` measures the gain).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from .base import Extractor


class BatchingExtractor:
    """An extractor whose :meth:`embed_batch` calls from many threads are merged into shared batches.

    Everything else (``describe``, ``preprocess``, ``dim``, …) is the wrapped extractor's own.
    """

    def __init__(self, extractor: Extractor, *, max_batch: int = 16, wait_ms: float = 0.0):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.extractor = extractor
        self.max_batch = max_batch
        self.wait = max(0.0, wait_ms) / 1000.0
        self._queue: queue.Queue[tuple[np.ndarray, Future]] = queue.Queue()
        self._runner = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
        self._runner.start()
        #: Batches run and photos embedded (for tests and the benchmark's report).
        self.batches = 0
        self.photos = 0

    def __getattr__(self, name: str):
        return getattr(self.extractor, name)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Like the wrapped extractor's, but merged with other threads' concurrent calls."""
        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) >= self.max_batch:  # already a full batch (indexing): no reason to wait
            return self.extractor.embed_batch(batch)
        done: Future = Future()
        self._queue.put((batch, done))
        return done.result()

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            size = len(jobs[0][0])
            deadline = time.monotonic() + self.wait
            while size < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
                size += len(job[0])
            try:
                out = self.extractor.embed_batch(np.concatenate([b for b, _ in jobs]))
            except BaseException as exc:  # every waiting caller gets the error, the runner lives on
                for _, done in jobs:
                    done.set_exception(exc)
                continue
            self.batches += 1
            self.photos += size
            start = 0
            for b, done in jobs:
                done.set_result(out[start : start + len(b)])
                start += len(b)
