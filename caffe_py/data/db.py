"""Key-value databases as Caffe's util/db: LMDB (the `lmdb` package) and LevelDB (`plyvel`).

Readers open LMDB read-only without a lock file, so read-only folders work,
after lmdb_check has found the file whole (a damaged LMDB would fault inside
the library); errors while reading name the database and the record key.
`DBWriter` builds a new database in a temporary folder beside the target and
renames it into place on `close()`, so a failed run leaves nothing under the
final name; like Caffe it refuses a target that already exists.
"""
import os
import shutil
import tempfile
import threading

from .. import log
from ..formats.errors import shown
from .hdf5 import DataSourceError
from .lmdb_check import check_lmdb

BACKENDS = ('lmdb', 'leveldb')

# LMDB allows one environment per file per process: readers of the same path share it
_LMDB_ENVS = {}
_LMDB_LOCK = threading.Lock()


def _open_lmdb(source):
    import lmdb
    key = os.path.realpath(source)
    with _LMDB_LOCK:
        known = key in _LMDB_ENVS
    if not known:
        check_lmdb(source)      # outside the lock: it may read the whole file (in a child), once
    with _LMDB_LOCK:
        entry = _LMDB_ENVS.get(key)
        if entry is None:
            env = lmdb.open(source, readonly=True, lock=False, readahead=False, max_readers=126,
                            subdir=os.path.isdir(source))
            entry = _LMDB_ENVS[key] = [env, 0]
        entry[1] += 1
        return key, entry[0]


def _close_lmdb(key):
    with _LMDB_LOCK:
        entry = _LMDB_ENVS[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _LMDB_ENVS[key]
            entry[0].close()


def backend_name(backend):
    """'lmdb' or 'leveldb' from a name or a DataParameter.DB value."""
    if not isinstance(backend, str):
        from ..proto import caffe_pb2
        backend = caffe_pb2.DataParameter.DB.Name(backend)
    name = backend.lower()
    if name not in BACKENDS:
        raise ValueError('Unknown database backend "%s" (known: lmdb, leveldb)' % backend)
    return name


def _plyvel():
    try:
        import plyvel
    except ImportError:
        raise DataSourceError('the LEVELDB backend needs the plyvel package (pip install plyvel)') from None
    return plyvel


class Reader:
    """Sequential reading of (key, value) in key order, wrapping around at the end on request."""

    def __init__(self, source, backend):
        self.source = source
        self.backend = backend_name(backend)
        if not os.path.exists(source):
            raise DataSourceError('%s database %s does not exist (working directory %s)'
                                  % (self.backend.upper(), source, os.getcwd()))
        try:
            if self.backend == 'lmdb':
                self._key, self._env = _open_lmdb(source)
                self._txn = self._env.begin(buffers=False)
            else:
                self._env = _plyvel().DB(source, create_if_missing=False)
        except DataSourceError:
            raise
        except Exception as exc:  # lmdb.Error, plyvel.Error
            if self.backend == 'lmdb' and getattr(self, '_key', None):
                _close_lmdb(self._key)
            hint = ''
            if self.backend == 'leveldb' and os.path.exists(os.path.join(source, 'data.mdb')):
                hint = ' (it holds an LMDB: set backend: LMDB)'
            detail = exc.args[0] if exc.args else exc
            if isinstance(detail, bytes):
                detail = detail.decode(errors='replace')
            raise DataSourceError('Failed to open %s %s: %s%s' % (self.backend, source, detail, hint)) from None
        log.info('Opened %s %s', self.backend, source)
        self._iter = None
        self.seek_to_first()

    def _failed(self, exc, where):
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode(errors='replace')
        kind = 'corrupt LMDB' if self.backend == 'lmdb' else 'corrupt LevelDB'
        return DataSourceError('%s: %s (%s: %s)' % (kind, self.source, where, detail))

    def _after(self):
        try:
            return 'after record %s' % shown(self.key()) if self._valid else 'at the start'
        except Exception:  # the cursor itself is unusable
            return 'reading'

    def seek_to_first(self):
        try:
            if self.backend == 'lmdb':
                self._cursor = self._txn.cursor()
                self._valid = self._cursor.first()
            else:
                self._iter = self._env.iterator()
                self._advance_leveldb()
        except Exception as exc:  # lmdb.Error, plyvel.Error
            raise self._failed(exc, 'at the first record') from None

    def _advance_leveldb(self):
        self._item = next(self._iter, None)
        self._valid = self._item is not None

    @property
    def valid(self):
        return self._valid

    def key(self):
        return self._cursor.key() if self.backend == 'lmdb' else self._item[0]

    def value(self):
        return self._cursor.value() if self.backend == 'lmdb' else self._item[1]

    def next(self):
        where = self._after()
        try:
            if self.backend == 'lmdb':
                self._valid = self._cursor.next()
            else:
                self._advance_leveldb()
        except Exception as exc:  # lmdb.Error, plyvel.Error
            raise self._failed(exc, where) from None

    def __iter__(self):
        """(key, value) pairs from the current position to the end."""
        while self._valid:
            yield self.key(), self.value()
            self.next()

    def close(self):
        if self._env is not None:
            if self.backend == 'lmdb':
                self._txn.abort()
                _close_lmdb(self._key)
            else:
                self._env.close()
            self._env = None


class DBWriter:
    """A new database at `path`, filled with `put` and committed every `commit_every` puts by the caller."""

    def __init__(self, path, backend):
        self.path = path
        self.backend = backend_name(backend)
        if os.path.exists(path):
            raise DataSourceError('%s already exists; refusing to overwrite it' % path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise DataSourceError('cannot create %s: folder %s does not exist' % (path, folder))
        self._tmp = tempfile.mkdtemp(prefix='.%s.' % os.path.basename(os.path.abspath(path)),
                                     suffix='.partial', dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o777 & ~umask)
        self._pending = []
        try:
            if self.backend == 'lmdb':
                import lmdb
                self._env = lmdb.open(self._tmp, map_size=10 << 20, subdir=True)
            else:
                self._env = _plyvel().DB(self._tmp, create_if_missing=True, error_if_exists=False,
                                         block_size=65536, write_buffer_size=268435456,
                                         max_open_files=100)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        log.info('Opened %s %s', self.backend, path)

    def put(self, key, value):
        self._pending.append((_bytes(key), _bytes(value)))

    def commit(self):
        """Write the pending puts in one transaction (LMDB's map grows as Caffe's does: doubling)."""
        if self.backend == 'lmdb':
            import lmdb
            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        for key, value in self._pending:
                            txn.put(key, value)
                    break
                except lmdb.MapFullError:
                    self._env.set_mapsize(self._env.info()['map_size'] * 2)
        else:
            with self._env.write_batch() as batch:
                for key, value in self._pending:
                    batch.put(key, value)
        self._pending = []

    def close(self):
        """Commit what is pending and move the database to its final name."""
        self.commit()
        self._env.close()
        if os.path.exists(self.path):
            self.abort()
            raise DataSourceError('%s appeared while it was being written; left it alone' % self.path)
        os.rename(self._tmp, self.path)

    def abort(self):
        """Drop the partial database."""
        try:
            self._env.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.abort()


def _bytes(text):
    return text.encode() if isinstance(text, str) else bytes(text)
