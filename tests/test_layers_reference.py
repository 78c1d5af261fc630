"""Every case of ../shared/reference/layers: forward, parameters after forward, gradients, as Caffe."""
import glob
import os

import pytest

from conftest import REFERENCE
from harness import run_reference_case

CASES = sorted(glob.glob(os.path.join(REFERENCE, 'layers', '*.npz')))
LOOSE = ('lstm', 'rnn')


@pytest.mark.skipif(not CASES, reason='../shared/reference/layers is absent')
@pytest.mark.parametrize('path', CASES, ids=[os.path.basename(c)[:-4] for c in CASES])
def test_reference_case(path):
    name = os.path.basename(path)
    run_reference_case(path, rtol=1e-4 if name.startswith(LOOSE) else 2e-5)
