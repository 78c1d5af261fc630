"""glog-format logging on stderr, as Caffe prints it.

Lines look like `I1127 13:39:22.381027  4242 solver.py:239] message`, the
classic glog prefix that Caffe's tools/extra/parse_log.py reads.
GLOG_minloglevel (0 INFO, 1 WARNING, 2 ERROR) filters as it does for Caffe.
The module is also pycaffe's `caffe.log(msg)`: calling it logs `msg` at INFO.
"""
import logging
import os
import sys
import threading
import time
import types

logger = logging.getLogger('caffe_py')

_LETTERS = {logging.DEBUG: 'I', logging.INFO: 'I', logging.WARNING: 'W',
            logging.ERROR: 'E', logging.CRITICAL: 'F'}
_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


class GlogFormatter(logging.Formatter):
    def format(self, record):
        t = time.localtime(record.created)
        micros = int((record.created % 1) * 1e6)
        prefix = '%s%02d%02d %02d:%02d:%02d.%06d %5d %s:%d] ' % (
            _LETTERS.get(record.levelno, 'I'), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min,
            t.tm_sec, micros, threading.get_native_id() % 100000, record.filename, record.lineno)
        return prefix + record.getMessage()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (pytest swaps it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def init(level=None):
    """Send caffe_py's log to stderr in glog format (once); `level` overrides GLOG_minloglevel."""
    if level is None:
        level = _LEVELS.get(int(os.environ.get('GLOG_minloglevel', '0') or 0), logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(GlogFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def init_log(level=None, stderr=True):
    """pycaffe's caffe.init_log: log from glog level `level` up (0 INFO, 1 WARNING, 2 ERROR;
    default GLOG_minloglevel). caffe-py always logs to stderr, whatever `stderr` says."""
    init(None if level is None else _LEVELS.get(int(level), logging.CRITICAL))


debug = logger.debug
info = logger.info
warning = logger.warning
error = logger.error


def fmt(value):
    """A float as a C++ ostream prints it by default (6 significant digits)."""
    return '%g' % value


class _CallableModule(types.ModuleType):
    def __call__(self, msg):
        """pycaffe's caffe.log(msg): LOG(INFO) << msg, the caller's file and line in the prefix."""
        logger.info('%s', msg, stacklevel=2)


sys.modules[__name__].__class__ = _CallableModule
