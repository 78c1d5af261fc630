"""caffe-py: BVLC Caffe's files, nets, solvers and tools in Python (NumPy / CuPy).

`import caffe_py as caffe` gives pycaffe's surface: Net, TRAIN/TEST, solvers,
set_mode_cpu/set_mode_gpu/set_device, io, Classifier, Detector, layer_type_list, coord_map,
and net_spec's NetSpec, to_proto, params and layers (`from caffe_py import layers as L` then
`L.Convolution(...)`: the layers package hands net_spec's layer functions out).
"""
from . import log
from .backend import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .blob import Blob
from .layer import Layer, layer_type_list
from .net import TEST, TRAIN, Net
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                      RMSPropSolver, SGDSolver, get_solver)
from . import layers  # noqa: F401  (registers every layer type)
from . import io  # noqa: F401
from .classifier import Classifier  # noqa: F401
from .detector import Detector  # noqa: F401
from .net_spec import NetSpec, params, to_proto  # noqa: F401
from . import coord_map  # noqa: F401  (pycaffe's caffe.coord_map: crop for FCN-style nets)
from .log import init_log  # noqa: F401
from .solvers.timer import Timer  # noqa: F401
from .parallel import (has_nccl, set_multiprocess, set_solver_count, set_solver_rank,  # noqa: F401
                       solver_count, solver_rank)
from .parallel.nccl import NCCL  # noqa: F401

__version__ = '0.1.0'

log.init()
