"""Caffe's Timer: the solver's iter/s display and `caffe time` read it.

On the CPU Caffe counts whole milliseconds (whole microseconds for
micro_seconds); on the GPU it times CUDA events, so the device is
synchronized before each reading.
"""
import time

from .. import backend


class Timer:
    def __init__(self):
        self._start = None
        self._elapsed = 0.0
        self._running = False

    def start(self):
        backend.synchronize()
        self._start = time.perf_counter()
        self._running = True

    def stop(self):
        if self._running:
            backend.synchronize()
            self._elapsed = time.perf_counter() - self._start
            self._running = False

    def _read(self, per_second):
        self.stop()
        value = self._elapsed * per_second
        return float(int(value)) if backend.mode() == 'cpu' else value

    def milliseconds(self):
        return self._read(1e3)

    def microseconds(self):
        return self._read(1e6)

    def seconds(self):
        return self.milliseconds() / 1000.0

    @property
    def ms(self):
        """pycaffe's caffe.Timer().ms: the milliseconds from start to stop (stopping it)."""
        return self.milliseconds()
