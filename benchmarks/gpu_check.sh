#!/usr/bin/env bash
# caffe-py's GPU checks in one run: every test marked gpu (tests/test_gpu.py: every reference layer
# and solver case in GPU mode, CaffeNet CPU-vs-GPU, kernels against the CPU path, determinism; the fork
# and detection layers against the CPU; NCCL data-parallel training where the card count allows) and
# benchmarks/bench_gpu.py (CaffeNet forward+backward images/s at batch 256 next to PyTorch).
#
# On a machine with a CUDA GPU and CuPy, from the repository root:
#     bash benchmarks/gpu_check.sh            # results in $OUT, else ./gpu_check_out
#
# With this workplace's device tool (the device machine has CuPy, PyTorch, numpy, h5py, OpenCV,
# Pillow and pytest, but no network, no lmdb and perhaps an older protobuf; the tests read
# ../shared/reference, which does not travel):
#   1. here, once per session (needs PyPI):    PYTHON=/path/to/venv/python bash benchmarks/gpu_check.sh --prepare
#      fills .gpu_carry/ (git-ignored by .gitignore): wheels/ (protobuf and lmdb for
#      the device's Python 3.12) and shared/reference (a copy of ../shared/reference, test data
#      only; never commit it). About 6 MiB.
#   2. device run:  command "bash benchmarks/gpu_check.sh", carry [".gpu_carry"], timeout_s 560.
#      It takes about 4 minutes on an H100 (tests about 2, benchmark about 1).
# Files back: env.txt, pytest.log, junit.xml, bench_gpu.txt, bench_gpu.json, commands.log.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry

if [ "${1:-}" = "--prepare" ]; then
    set -e
    mkdir -p "$CARRY/wheels" "$CARRY/shared"
    rm -f "$CARRY"/wheels/*.whl
    # the versions setup.py asks for, built for the device's CPython 3.12
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CARRY/wheels" \
        'protobuf>=4.21.6' lmdb
    rm -rf "$CARRY/shared/reference"
    cp -r ../shared/reference "$CARRY/shared/reference"
    du -sh "$CARRY"
    ls "$CARRY/wheels"
    exit 0
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
{
    date -u
    nvidia-smi -L 2>&1
    $PY -V
    $PY -m pip list 2>/dev/null | grep -iE '^(cupy|torch|numpy|protobuf|h5py|lmdb|opencv|pytest)'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if ls "$CARRY"/wheels/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/caffe_py_site "$CARRY"/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/caffe_py_site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ ! -e ../shared ] && [ -d "$CARRY/shared" ]; then
    ln -s "$PWD/$CARRY/shared" ../shared
fi
export PYTHONUNBUFFERED=1 GLOG_minloglevel=2
unset CUPY_TF32

# the tests spread over 8 processes where pytest-xdist is there (each has its own CUDA context)
XDIST=""
$PY -c "import xdist" 2>/dev/null && XDIST="-n 8"
echo "== pytest -m gpu $XDIST"
timeout 300 $PY -m pytest -q -p no:cacheprovider -m gpu -rs $XDIST --junitxml="$OUT/junit.xml" \
    tests 2>&1 | tee "$OUT/pytest.log"
tests_rc=${PIPESTATUS[0]}

echo "== bench_gpu.py"
timeout 120 $PY benchmarks/bench_gpu.py --batch 256 --iters "${BENCH_ITERS:-20}" --json "$OUT/bench_gpu.json" 2>&1 \
    | tee "$OUT/bench_gpu.txt"
bench_rc=${PIPESTATUS[0]}

# the commands as a user types them, on the device: per-layer times of CaffeNet at batch 256, and
# the README's finetuning example (its CPU run ends at test accuracy 0.700)
{
    echo "== caffe-py time -gpu 0 (CaffeNet, batch 256, loss on fc8)"
    $PY - <<'PYEOF'
from caffe_py import formats
net = formats.read_net('models/bvlc_reference_caffenet/deploy.prototxt')
net.layer[0].input_param.shape[0].dim[0] = 256
net.layer[-1].loss_weight.append(1.0)
formats.write_net('/tmp/caffenet256.prototxt', net)
PYEOF
    GLOG_minloglevel=0 timeout 60 $PY -m caffe_py time -model /tmp/caffenet256.prototxt -gpu 0 \
        -iterations 5 -phase TEST
    echo "time exit $?"
    echo "== caffe-py train -gpu 0 (README example)"
    GLOG_minloglevel=0 timeout 90 $PY -m caffe_py train -solver examples/finetune_style/solver.prototxt \
        -weights models/mini_caffenet/mini_caffenet_pretrained.caffemodel -gpu 0
    echo "train exit $?"
} > "$OUT/commands.log" 2>&1
grep -E "Average|forward:|backward:|exit|accuracy|Optimization Done|Error|error" "$OUT/commands.log" | tail -60

echo "== done: pytest exit $tests_rc, benchmark exit $bench_rc"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
