"""Every case of ../shared/reference/layers: forward, parameters after forward, gradients, as Caffe."""
import glob
import os

import pytest

from conftest import REFERENCE
from harness import run_reference_case

CASES = sorted(glob.glob(os.path.join(REFERENCE, 'layers', '*.npz')))


@pytest.mark.skipif(not CASES, reason='../shared/reference/layers is absent')
@pytest.mark.parametrize('path', CASES, ids=[os.path.basename(c)[:-4] for c in CASES])
def test_reference_case(path):
    run_reference_case(path)
