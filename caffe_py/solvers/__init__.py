"""Caffe's solvers: the training loop and its update rules.

get_solver(path or SolverParameter) builds the solver its `type` names, as
caffe.get_solver and Caffe's SolverRegistry do.
"""
import os

from .. import formats
from ..proto import caffe_pb2
from .adaptive import AdaDeltaSolver, AdaGradSolver, AdamSolver, RMSPropSolver
from .lr_policies import LearningRateError, learning_rate
from .sgd import NesterovSolver, SGDSolver
from .solver import NONE, SNAPSHOT, STOP, Solver, SolverError, solver_parameter

SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                     AdaDeltaSolver, AdamSolver)}


def get_solver(param):
    """A solver of the type the solver definition names (default SGD)."""
    path = None if isinstance(param, caffe_pb2.SolverParameter) else os.fspath(param)
    param = solver_parameter(param)
    cls = SOLVERS.get(param.type)
    if cls is None:
        raise SolverError('%sUnknown solver type: %s (known types: %s)'
                          % (path + ': ' if path else '', param.type, ', '.join(sorted(SOLVERS))))
    try:
        solver = cls(param)
        solver.source = path             # later errors (the lr policy) name the solver file too
        return solver
    except formats.MissingFileError as exc:
        if path is None or path in str(exc):
            raise
        raise formats.MissingFileError(exc.filename, '%s in %s' % (exc.named_by or 'a setting', path)) from None
    except (SolverError, LearningRateError) as exc:
        if path is None or path in str(exc):
            raise
        raise type(exc)('%s: %s' % (path, exc)) from None


__all__ = ['get_solver', 'SOLVERS', 'Solver', 'SolverError', 'SGDSolver', 'NesterovSolver',
           'AdaGradSolver', 'RMSPropSolver', 'AdaDeltaSolver', 'AdamSolver', 'learning_rate',
           'LearningRateError', 'NONE', 'STOP', 'SNAPSHOT']
