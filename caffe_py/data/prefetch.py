"""Background prefetching: a daemon thread keeps `depth` batches ready, as Caffe's BasePrefetchingDataLayer.

The producer is any object with `load_batch(batch)` filling a `Batch`; its
per-item work may be spread over a small thread pool with `parallel_items`
(OpenCV and NumPy release the GIL). Errors in the thread reach the consumer
at its next `get()`. `close()` stops the thread; live prefetchers are closed at
interpreter exit, and a prefetcher whose owner is garbage collected stops too.
"""
import atexit
import os
import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import log
from ..blob import Blob

_LIVE = weakref.WeakSet()


def default_workers():
    """Threads decoding one batch: CAFFE_PY_DATA_THREADS, else half the CPUs (1 to 4), leaving the rest to the net."""
    value = os.environ.get('CAFFE_PY_DATA_THREADS')
    if value:
        return max(1, int(value))
    return max(1, min(4, (os.cpu_count() or 1) // 2))


class Batch:
    """One batch: `data` (N x ...) held by a host Blob (so a top can share it) and `label` (N).

    Buffers are regrown only when a batch needs more room.
    """

    def __init__(self, dtype):
        self.blob = Blob(dtype=dtype, xp=np)
        self._label = np.empty(0, dtype)
        self.label = self._label

    @property
    def data(self):
        return self.blob.data

    def reshape(self, data_shape, label_shape=None):
        self.blob.reshape(data_shape)
        if label_shape is not None:
            count = int(np.prod(label_shape))
            if self._label.size < count:
                self._label = np.empty(count, self._label.dtype)
            self.label = self._label[:count].reshape(label_shape)


class _Failure:
    def __init__(self, exc):
        self.exc = exc


class Prefetcher:
    """Fill batches in a daemon thread with `loader.load_batch(batch)`; `get()` a full one, `release()` it."""

    def __init__(self, loader, depth, dtype, name='prefetch'):
        self.loader = loader
        self.depth = max(1, int(depth))
        self._free = queue.Queue()
        self._full = queue.Queue()
        for _ in range(self.depth):
            self._free.put(Batch(dtype))
        self._stop = threading.Event()
        self._pool = None
        self._thread = threading.Thread(target=_run, name=name, daemon=True,
                                        args=(loader, self._free, self._full, self._stop))
        _LIVE.add(self)
        self._thread.start()

    def get(self):
        """The next full batch (blocks); re-raises an error from the loading thread."""
        while True:
            if self._stop.is_set():
                raise RuntimeError('data prefetching was closed')
            try:
                item = self._full.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError('data prefetching thread died') from None
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def release(self, batch):
        self._free.put(batch)

    def close(self):
        """Stop the thread (it finishes the batch in hand) and wait for it briefly."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._free.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        closer = getattr(self.loader, 'close', None)
        if closer is not None and not self._thread.is_alive():
            closer()

    @property
    def closed(self):
        return self._stop.is_set()


def _run(loader, free, full, stop):
    while not stop.is_set():
        batch = free.get()
        if batch is None or stop.is_set():
            return
        try:
            loader.load_batch(batch)
        except BaseException as exc:  # handed to the consumer, which raises it
            full.put(_Failure(exc))
            return
        full.put(batch)


class ItemPool:
    """Run `work(i)` for items 0..n-1 on a few threads in contiguous chunks (one chunk per thread).

    The calling thread takes the first chunk; helper threads start at the first `run`.
    """

    def __init__(self, workers=None):
        self.workers = workers or default_workers()
        self._executor = None

    def run(self, n, work):
        chunks = min(self.workers, n)
        if chunks < 2:
            for i in range(n):
                work(i)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers - 1, thread_name_prefix='caffe_py-data')
        bounds = [n * k // chunks for k in range(chunks + 1)]

        def chunk(k):
            for i in range(bounds[k], bounds[k + 1]):
                work(i)

        futures, mine = [], [0]
        for k in range(1, chunks):
            try:
                futures.append(self._executor.submit(chunk, k))
            except RuntimeError as exc:   # "can't start new thread": the rest on this thread, and from now on
                log.warning('data decoding threads unavailable (%s); decoding on fewer threads', exc)
                mine += list(range(k, chunks))
                self.workers = 1
                break
        try:
            for k in mine:
                chunk(k)
        finally:
            for future in futures:       # wait for every chunk before the batch is handed on
                future.exception()
        for future in futures:
            future.result()

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


@atexit.register
def _close_all():
    for prefetcher in list(_LIVE):
        prefetcher.close()
