"""How much memory this process may still take, and a check made before large allocations.

A blob of absurd size (batch_size 2^31-1, a huge kernel or num_output) would
otherwise end in a MemoryError, or worse in the kernel's OOM killer once the
lazily committed pages are touched. `check(nbytes, what)` compares a request
with what the machine has: MemAvailable, capped by the cgroup's memory.max and
by RLIMIT_AS headroom. Requests up to CHECK_FROM bytes are never checked (cheap
path for the many small blobs).
"""
import os
import resource

CHECK_FROM = 64 << 20


class OutOfMemoryError(ValueError):
    """A request larger than the memory this process can have; the message says how many bytes."""

    def __init__(self, message, nbytes, available):
        super().__init__(message)
        self.nbytes = nbytes
        self.available = available


def _meminfo_available():
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available():
    try:
        with open('/sys/fs/cgroup/memory.max') as f:
            limit = f.read().strip()
        if limit == 'max':
            return None
        with open('/sys/fs/cgroup/memory.current') as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def _address_space_available():
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open('/proc/self/statm') as f:
            used = int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError):
        return None
    return soft - used


def available_bytes():
    """Bytes this process may still allocate (None when the platform does not say)."""
    values = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available())
              if v is not None]
    return max(0, min(values)) if values else None


def format_bytes(n):
    for unit, size in (('TiB', 1 << 40), ('GiB', 1 << 30), ('MiB', 1 << 20), ('KiB', 1 << 10)):
        if n >= size:
            return '%d bytes (%.1f %s)' % (n, n / size, unit)
    return '%d bytes' % n


def check(nbytes, what):
    """Raise OutOfMemoryError when `nbytes` (for `what`, e.g. "a blob of shape 4x3x8x8") cannot fit."""
    if nbytes < CHECK_FROM:
        return
    available = available_bytes()
    if available is not None and nbytes > available:
        raise OutOfMemoryError('%s needs %s; this machine has %s available'
                               % (what, format_bytes(nbytes), format_bytes(available)), nbytes, available)
