"""Snapshots that survive kills: the .caffemodel and .solverstate of one iteration appear together
or not at all.

`publish` writes each file of a snapshot to a temporary `<file>.tmp-<pid>` beside it and syncs it
to disk, then records the renames still to do in a journal `<prefix>_iter_<N>.snapshot-journal`
(written the same way), renames the files into place (the caffemodel first, the solverstate last)
and removes the journal. A kill before the journal exists leaves only temporaries; a kill after it
leaves a journal whose renames are still valid. `recover`, run when a solver starts, removes the
temporaries and completes the journals of runs that are no longer alive, so that afterwards every
snapshot of the prefix has both its files. No file outside this scheme is ever deleted.
"""
import json
import os
import re

from .. import log

_TEMP = re.compile(r'_iter_\d+\.(?:caffemodel|solverstate|caffemodel\.h5|solverstate\.h5|snapshot-journal)'
                   r'\.tmp-(\d+)')
_JOURNAL = re.compile(r'_iter_\d+\.snapshot-journal')
_STATE = re.compile(r'_iter_(\d+)\.solverstate(\.h5)?')


class SnapshotError(OSError):
    """A snapshot that could not be written (disk full, no permission ...), naming its file."""


def temp_path(path):
    """Where `path` is written before it is published."""
    return '%s.tmp-%d' % (path, os.getpid())


def write_bytes(path, payload):
    with open(path, 'wb') as f:
        f.write(payload)


def write_hdf5(path, fill):
    """An HDF5 file at `path` filled by `fill(h5py.File)`."""
    import h5py
    with h5py.File(path, 'w') as f:
        fill(f)


def _sync(path):
    """Flush `path` (a file, or a folder's entries) to the disk; folders that cannot be synced are left."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if os.path.isdir(path):
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def publish(files, journal):
    """Write the snapshot `files` [(path, write(temp_path))] and rename them into place in their order.

    A failure (disk full ...) raises SnapshotError naming the file and leaves no temporary behind and
    every earlier file as it was.
    """
    folder = os.path.dirname(journal) or '.'
    temps = [temp_path(path) for path, _ in files]
    journal_temp = temp_path(journal)
    current = files[0][0]
    try:
        for (path, write), temp in zip(files, temps):
            current = path
            write(temp)
            _sync(temp)
        current = journal
        with open(journal_temp, 'w') as f:
            json.dump({'pid': os.getpid(), 'renames': [[os.path.basename(t), os.path.basename(p)]
                                                       for t, (p, _) in zip(temps, files)]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(journal_temp, journal)
    except BaseException as exc:
        for temp in temps + [journal_temp]:
            if os.path.exists(temp):
                os.remove(temp)
        if isinstance(exc, Exception):       # OSError; h5py reports a full disk as RuntimeError
            raise SnapshotError('cannot write snapshot %s: %s (nothing of it was kept; earlier '
                                'snapshots are untouched)' % (current, _reason(exc))) from exc
        raise
    _sync(folder)
    for temp, (path, _) in zip(temps, files):
        os.replace(temp, path)
    _sync(folder)
    os.remove(journal)


def _reason(exc):
    text = getattr(exc, 'strerror', None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _running(pid):
    """Whether another live process has this id (a zombie, or this process, does not count)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


def _own_files(prefix, pattern):
    """(path, match) for the files in prefix's folder named <prefix's name><something `pattern` matches>."""
    folder, base = os.path.split(prefix)
    try:
        names = sorted(os.listdir(folder or '.'))
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name[len(base):]) if name.startswith(base) else None
        if match:
            found.append((os.path.join(folder, name), match))
    return found


def recover(prefix):
    """Finish or undo the snapshots of `prefix` that a killed run left half-published (say so in the log)."""
    for journal, _ in _own_files(prefix, _JOURNAL):
        _complete(journal)
    for temp, match in _own_files(prefix, _TEMP):
        pid = int(match.group(1))
        if _running(pid):
            log.warning('Leaving %s: process %d, which writes it, is running', temp, pid)
            continue
        os.remove(temp)
        log.warning('Removed %s, left by a snapshot that was interrupted (process %d)', temp, pid)


def _complete(journal):
    folder = os.path.dirname(journal)
    try:
        with open(journal) as f:
            record = json.load(f)
        pid, renames = int(record['pid']), [(str(t), str(p)) for t, p in record['renames']]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning('Removed the unreadable snapshot journal %s (%s)', journal, exc)
        os.remove(journal)
        return
    if _running(pid):
        log.warning('Leaving %s: process %d, which writes it, is running', journal, pid)
        return
    for temp, path in renames:
        temp, path = os.path.join(folder, temp), os.path.join(folder, path)
        if os.path.exists(temp):
            os.replace(temp, path)
    _sync(folder or '.')
    os.remove(journal)
    log.warning('Completed the snapshot %s interrupted by a kill (process %d)',
                ' + '.join(os.path.join(folder, p) for _, p in renames), pid)


def latest_pair(prefix):
    """(solverstate, caffemodel) of the newest snapshot of `prefix` that has both files, or None."""
    pairs = []
    for state, match in _own_files(prefix, _STATE):
        model = '%s_iter_%s.caffemodel%s' % (prefix, match.group(1), match.group(2) or '')
        if os.path.isfile(model) and os.path.getsize(model) and os.path.getsize(state):
            pairs.append((int(match.group(1)), os.path.getmtime(state), state, model))
    return max(pairs)[2:] if pairs else None
