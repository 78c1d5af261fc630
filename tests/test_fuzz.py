"""The fuzz suite (tests/fuzz): every reader and data layer over mutated files, no failures.

CI runs CAFFE_PY_FUZZ_CASES cases (default 2000) with seed CAFFE_PY_FUZZ_SEED (default 0);
`CAFFE_PY_FUZZ_CASES=20000 python -m pytest tests/test_fuzz.py` runs more, and
`python -m tests.fuzz --cases N --seed S` prints the table.
"""
import os

import numpy as np
import pytest
from fuzz import mutate, targets
from fuzz.pool import Pool, format_table, run_fuzz


def test_fuzz_cases_are_loaded_or_refused_cleanly():
    cases = int(os.environ.get('CAFFE_PY_FUZZ_CASES', 2000))
    seed = int(os.environ.get('CAFFE_PY_FUZZ_SEED', 0))
    table, failures = run_fuzz(cases, seed)
    print('\n' + format_table(table))
    assert sum(sum(row.values()) for row in table.values()) == cases
    assert set(table) >= {'net', 'solver', 'caffemodel', 'solverstate', 'mean', 'lmdb', 'hdf5',
                          'hdf5_list', 'image_list', 'image', 'window_file'}
    for reader, row in table.items():
        assert row[targets.LOADED] + row[targets.REFUSED] > 0, reader
    assert not failures, '\n'.join('case %d (%s): %s: %s' % f for f in failures[:20])


def test_mutations_are_deterministic():
    data = b'layer { name: "a" type: "Convolution" convolution_param { num_output: 4 } }\n' * 3
    for k in range(20):
        one = mutate.mutate_text(np.random.default_rng([5, k]), data)
        two = mutate.mutate_text(np.random.default_rng([5, k]), data)
        assert one == two
    assert len({mutate.mutate_bytes(np.random.default_rng([5, k]), data) for k in range(20)}) > 10


def test_classification_rule():
    from caffe_py.data.hdf5 import DataSourceError
    from caffe_py.net import NetError
    names = ['/tmp/x/case.h5', 'conv1']
    assert targets.classify(None, names) == targets.LOADED
    assert targets.classify(DataSourceError('bad file /tmp/x/case.h5'), names) == targets.REFUSED
    assert targets.classify(NetError('Convolution layer "conv1": no'), names) == targets.REFUSED
    assert targets.classify(NetError('something is wrong'), names) == targets.VAGUE
    assert targets.classify(NetError('conv1\nsecond line'), names) == targets.VAGUE
    assert targets.classify(ValueError('/tmp/x/case.h5'), names) == targets.INTERNAL
    assert targets.classify(MemoryError(), names) == targets.MEMORY


@pytest.mark.slow
def test_pool_records_crashes_and_replaces_the_worker(monkeypatch):
    """With the LMDB walk switched off, damaged databases kill workers again: each is a crash, and
    every case still gets an outcome from a fresh worker."""
    monkeypatch.setenv('CAFFE_PY_LMDB_CHECK_BYTES', '0')
    pool = Pool(2, base_seed=3, use_corpus=False)
    try:
        lmdb_cases = [case for case in pool.cases(3000) if pool.seeds[case[1]][0] == 'lmdb'][:300]
        outcomes = [outcome for _, _, outcome, _ in pool.run(lmdb_cases)]
    finally:
        pool.close()
    assert len(outcomes) == len(lmdb_cases)
    assert outcomes.count(targets.CRASH) > 0


def test_generated_seeds_cover_every_reader_without_shared():
    """Without ../shared the suite makes all its seeds itself."""
    table, failures = run_fuzz(110, base_seed=1, use_corpus=False)
    assert all(sum(row.values()) == 10 for row in table.values()) and len(table) == 11
    assert not failures, failures


def test_outcomes_do_not_depend_on_which_worker_runs_a_case():
    one, _ = run_fuzz(110, base_seed=2, workers=1, use_corpus=False)
    two, _ = run_fuzz(110, base_seed=2, workers=2, use_corpus=False)
    assert one == two
