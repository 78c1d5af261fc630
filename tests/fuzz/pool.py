"""A pool of persistent fuzz workers: cases go out one at a time per worker, with a time limit;
a worker that dies (a signal, an exit) or overruns is replaced and the case recorded as a crash
or a hang."""
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from . import seeds as seeds_module
from . import targets

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MEMORY = 3 << 30
DEFAULT_TIMEOUT = 30.0


class Worker:
    def __init__(self, config):
        # one BLAS thread and two malloc arenas: under RLIMIT_AS, per-thread reservations of address
        # space (64 MiB a glibc arena) would otherwise count against the limit on many-core machines
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(TESTS), os.environ.get('PYTHONPATH', '')]), GLOG_minloglevel='3',
            OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1', MALLOC_ARENA_MAX='2')
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(TESTS, 'fuzz', 'worker.py'), config['file']],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
            cwd=config['scratch'])
        self.case = None
        self.started = None
        self.buffer = b''
        line = self.proc.stdout.readline()
        if line.strip() != b'ready':
            self.stderr.seek(0)
            raise RuntimeError('fuzz worker did not start: %s' % self.stderr.read()[-2000:].decode(errors='replace'))

    def send(self, case):
        self.case = case
        self.started = time.monotonic()
        self.proc.stdin.write((json.dumps({'index': case[0], 'seed': case[1]}) + '\n').encode())
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


class Pool:
    """`workers` processes sharing the seeds written into a temporary folder."""

    def __init__(self, workers=2, base_seed=0, memory_bytes=DEFAULT_MEMORY, timeout=DEFAULT_TIMEOUT,
                 use_corpus=True):
        self.tmp = tempfile.TemporaryDirectory(prefix='caffe_py_fuzz_')
        seed_dir = os.path.join(self.tmp.name, 'seeds')
        os.makedirs(seed_dir)
        self.seeds = seeds_module.make_seeds(seed_dir)
        if use_corpus:
            self.seeds += seeds_module.corpus_seeds()
        self.config = {'seeds': self.seeds, 'base_seed': base_seed, 'memory_bytes': memory_bytes,
                       'scratch': os.path.join(self.tmp.name, 'scratch')}
        os.makedirs(self.config['scratch'])
        self.config['file'] = os.path.join(self.tmp.name, 'config.json')
        with open(self.config['file'], 'w') as f:
            json.dump(self.config, f)
        self.timeout = timeout
        self.size = workers
        self.workers = []

    def readers(self):
        return sorted({seed[0] for seed in self.seeds})

    def cases(self, count):
        """(index, seed index) of `count` cases: readers in turn, seeds of a reader in turn."""
        by_reader = {}
        for i, seed in enumerate(self.seeds):
            by_reader.setdefault(seed[0], []).append(i)
        order = self.readers()
        return [(i, by_reader[order[i % len(order)]][(i // len(order)) % len(by_reader[order[i % len(order)]])])
                for i in range(count)]

    def run(self, cases, progress=None):
        """Yield (case index, reader, outcome, detail) for each case, in completion order."""
        pending = list(reversed(cases))
        self.workers = [Worker(self.config) for _ in range(self.size)]
        try:
            while pending or any(w.case for w in self.workers):
                for w in self.workers:
                    if w.case is None and pending:
                        w.send(pending.pop())
                busy = [w for w in self.workers if w.case is not None]
                ready, _, _ = select.select([w.proc.stdout for w in busy], [], [], 0.5)
                for i, w in enumerate(self.workers):
                    if w.case is None:
                        continue
                    result = None
                    if w.proc.stdout in ready:
                        line = w.proc.stdout.readline()
                        if line:
                            answer = json.loads(line)
                            result = (answer['outcome'], answer['detail'])
                        else:
                            result = self._death(w)
                    elif time.monotonic() - w.started > self.timeout:
                        result = (targets.HANG, 'no answer in %gs' % self.timeout)
                    if result is None:
                        continue
                    index, seed = w.case
                    w.case = None
                    yield index, self.seeds[seed][0], result[0], result[1]
                    if result[0] in (targets.CRASH, targets.HANG):
                        w.stop()
                        self.workers[i] = Worker(self.config)
        finally:
            for w in self.workers:
                w.stop()

    def _death(self, w):
        code = w.proc.wait()
        w.stderr.seek(0)
        tail = w.stderr.read()[-300:].decode(errors='replace').strip().replace('\n', ' | ')
        if code < 0:
            return targets.CRASH, 'killed by %s; %s' % (signal.Signals(-code).name, tail)
        return targets.CRASH, 'worker exited with %d; %s' % (code, tail)

    def close(self):
        self.tmp.cleanup()


def run_fuzz(count, base_seed=0, workers=2, **kwargs):
    """{reader: {outcome: count}} and the failing cases [(index, reader, outcome, detail)]."""
    pool = Pool(workers, base_seed, **kwargs)
    try:
        table = {r: dict.fromkeys(targets.OUTCOMES, 0) for r in pool.readers()}
        failures = []
        for index, reader, outcome, detail in pool.run(pool.cases(count)):
            table[reader][outcome] += 1
            if outcome in targets.FAILURES:
                failures.append((index, reader, outcome, detail))
        return table, sorted(failures)
    finally:
        pool.close()


def format_table(table):
    """A Markdown table: one row per reader, one column per outcome, and the totals."""
    head = '| reader | cases | ' + ' | '.join(targets.OUTCOMES) + ' |'
    rows = [head, '|' + '---|' * (len(targets.OUTCOMES) + 2)]
    totals = dict.fromkeys(targets.OUTCOMES, 0)
    for reader in sorted(table):
        counts = table[reader]
        for k in totals:
            totals[k] += counts[k]
        rows.append('| %s | %d | %s |' % (reader, sum(counts.values()),
                                           ' | '.join(str(counts[k]) for k in targets.OUTCOMES)))
    rows.append('| **all** | %d | %s |' % (sum(totals.values()), ' | '.join(str(totals[k]) for k in targets.OUTCOMES)))
    return '\n'.join(rows)
