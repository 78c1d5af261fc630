"""caffe-py: a pip-installable reimplementation of BVLC Caffe on NumPy and CuPy."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# kernels/*.cu ship inside the package as caffe_py.kernels (loaded by CuPy in GPU mode); a source
# tree without them (an sdist built without the folder) installs the CPU package alone
KERNELS = ['caffe_py.kernels'] if os.path.isdir(os.path.join(HERE, 'kernels')) else []

setup(
    name='caffe-py',
    version='0.1.0',
    description="BVLC Caffe's nets, solvers, files and tools in Python (NumPy on the CPU, CuPy on NVIDIA GPUs)",
    long_description=open(os.path.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='BSD-2-Clause',
    python_requires='>=3.10',
    packages=find_packages(include=['caffe_py', 'caffe_py.*']) + KERNELS,
    package_dir={'caffe_py.kernels': 'kernels'},
    package_data={'caffe_py.kernels': ['*.cu']},
    install_requires=[
        'numpy>=1.23',
        'protobuf>=4.21.6',  # caffe_pb2 comes from protoc 3.21 (see caffe_py/proto/regen.py)
        'pillow',
        'opencv-python-headless>=4.5,<5',  # OpenCV 5 dropped dnn's Caffe importer
        'lmdb',
        'h5py',
    ],
    extras_require={
        'gpu': ['cupy-cuda12x'],          # CUDA 12; for CUDA 13 use gpu-cuda13
        'gpu-cuda13': ['cupy-cuda13x'],
        'skimage': ['scikit-image>=0.19'],  # caffe.io's images exactly as pycaffe's (scikit-image)
        'plot': ['matplotlib'],
        'leveldb': ['plyvel'],
        'mpi': ['mpi4py', 'openmpi'],     # data-parallel ranks over MPI (mpirun / srun, or CPUs)
        'onnx': ['onnx', 'onnxruntime'],  # caffe-py export_onnx; onnxruntime checks the exported numbers
        'deeplab': ['scipy'],             # DeepLab's MatRead/MatWrite (MAT files)
        # the tests exercise every extra but the GPU and LevelDB ones (matplotlib: plot_log/draw_net PNGs)
        'test': ['pytest', 'matplotlib', 'scikit-image>=0.19', 'mpi4py', 'openmpi', 'onnx', 'onnxruntime',
                 'scipy'],
    },
    entry_points={'console_scripts': ['caffe-py = caffe_py.tools.cli:main']},
)
