"""Checks that an LMDB file is whole before caffe-py maps it.

LMDB reads its file through a memory map: a page number, node offset or value
size pointing past the end of a damaged file faults (SIGBUS, SIGSEGV) or trips
an assertion (SIGABRT) inside the library, killing the process. `check_lmdb`
therefore (1) validates the two meta pages (magic, version, page size, last
page inside the file, root page inside the data) and (2) reads every key and
value once in a forked child process, where a fault kills only the child.
A database that passes is read by the caller without risk; one that fails
raises DataSourceError "corrupt LMDB: <path> (<what is wrong>)". Files larger
than CAFFE_PY_LMDB_CHECK_BYTES (default 4 GiB) get the meta checks only.
Results are remembered per (file, size, mtime), so train and test nets that
share a database check it once.
"""
import os
import signal
import struct
import threading
import warnings

from .. import log
from .hdf5 import DataSourceError

MAGIC = 0xBEEFC0DE
VERSION = 1
INVALID_PAGE = 0xFFFFFFFFFFFFFFFF
DEFAULT_CHECK_BYTES = 4 << 30
WALK_TIMEOUT = 600.0

_CHECKED = set()
_LOCK = threading.Lock()


def data_file(path):
    """The data.mdb of an LMDB folder, or `path` itself for a single-file database."""
    return os.path.join(path, 'data.mdb') if os.path.isdir(path) else path


def _corrupt(path, why):
    return DataSourceError('corrupt LMDB: %s (%s)' % (path, why))


def _meta(page):
    """(magic, version, page size, main root, main depth, last page, txn id) of a meta page."""
    magic, version = struct.unpack_from('<II', page, 16)
    psize = struct.unpack_from('<I', page, 40)[0]              # the free DB's md_pad holds the page size
    depth = struct.unpack_from('<H', page, 88 + 6)[0]
    root = struct.unpack_from('<Q', page, 88 + 40)[0]
    last, txnid = struct.unpack_from('<QQ', page, 136)
    return magic, version, psize, root, depth, last, txnid


def check_meta(path):
    """Validate the meta pages of the LMDB at `path`; raises DataSourceError when they are damaged."""
    name = data_file(path)
    try:
        size = os.path.getsize(name)
        with open(name, 'rb') as f:
            head = f.read(152)
            if len(head) < 152:
                raise _corrupt(path, '%s is %d bytes, shorter than an LMDB header' % (name, size))
            psize = struct.unpack_from('<I', head, 40)[0]
            if psize < 512 or psize > (1 << 16) or psize & (psize - 1):
                raise _corrupt(path, 'page size %d in the header' % psize)
            f.seek(psize)
            second = f.read(152)
    except OSError as exc:
        raise DataSourceError('Failed to open lmdb %s: %s' % (path, exc.strerror or exc)) from None
    if len(second) < 152:
        raise _corrupt(path, '%s is %d bytes, shorter than its two meta pages' % (name, size))
    metas = [_meta(head), _meta(second)]
    for i, (magic, version, page_size, _, _, _, _) in enumerate(metas):
        if magic != MAGIC:
            raise _corrupt(path, 'meta page %d has magic 0x%08x, not 0x%08x' % (i, magic, MAGIC))
        if version != VERSION:
            raise _corrupt(path, 'meta page %d has version %d, not %d' % (i, version, VERSION))
        if page_size != psize:
            raise _corrupt(path, 'meta pages disagree on the page size (%d, %d)' % (psize, page_size))
    _, _, _, root, depth, last, _ = max(metas, key=lambda m: m[6])   # LMDB uses the newer meta
    pages = size // psize
    if last >= pages or last < 1:
        raise _corrupt(path, 'its pages run to number %d but the file holds %d pages of %d bytes'
                       % (last, pages, psize))
    if root != INVALID_PAGE and not 2 <= root <= last:
        raise _corrupt(path, 'root page %d is outside pages 2..%d' % (root, last))
    if depth > 32:
        raise _corrupt(path, 'tree depth %d' % depth)
    return size


def _walk(path):
    """Read every record (child process); returns an error text or ''."""
    import lmdb
    env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=os.path.isdir(path))
    try:
        with env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            for key, value in cursor:
                pass
    finally:
        env.close()


def walk_in_child(path, timeout=WALK_TIMEOUT):
    """Read every key and value of the LMDB at `path` in a forked child; raise if it fails or faults."""
    read, write = os.pipe()
    try:
        with warnings.catch_warnings():     # Python 3.12 warns on fork with threads; the child only reads
            warnings.simplefilter('ignore', DeprecationWarning)
            pid = os.fork()
    except OSError as exc:            # no memory or processes left for a child: the meta checks stand
        os.close(read)
        os.close(write)
        log.warning('could not read LMDB %s in a child process (%s); checked its meta pages only',
                    path, exc.strerror or exc)
        return
    if pid == 0:                                   # the child: read, report, exit without cleanup
        code = 0
        try:
            os.close(read)
            _walk(path)
        except BaseException as exc:  # noqa: B036 -- reported to the parent
            message = exc.args[0] if getattr(exc, 'args', None) else exc
            if isinstance(message, bytes):
                message = message.decode(errors='replace')
            os.write(write, str(message).encode(errors='replace')[:500])
            code = 3
        os._exit(code)
    os.close(write)
    try:
        message = _read_all(read, pid, timeout)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        raise _corrupt(path, 'reading it faults (%s)' % signal.Signals(sig).name
                       if sig != signal.SIGKILL else 'reading it took over %g s' % timeout)
    if os.WEXITSTATUS(status):
        raise _corrupt(path, message.decode(errors='replace') or 'reading it failed')


def _read_all(fd, pid, timeout):
    import select
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return b''.join(chunks)
        chunk = os.read(fd, 4096)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)


def check_lmdb(path):
    """Meta checks, then (for files up to CAFFE_PY_LMDB_CHECK_BYTES) a full read in a child process."""
    name = data_file(path)
    try:
        stat = os.stat(name)
    except OSError as exc:
        raise DataSourceError('Failed to open lmdb %s: %s' % (path, exc.strerror or exc)) from None
    key = (os.path.realpath(name), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key in _CHECKED:
            return
    size = check_meta(path)
    limit = int(os.environ.get('CAFFE_PY_LMDB_CHECK_BYTES', DEFAULT_CHECK_BYTES))
    if size <= limit:
        walk_in_child(path)
    else:
        log.info('LMDB %s is larger than CAFFE_PY_LMDB_CHECK_BYTES (%d): checked its meta pages only',
                 path, limit)
    with _LOCK:
        _CHECKED.add(key)
