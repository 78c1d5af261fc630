"""Caffe's solvers: the training loop and its update rules.

get_solver(path or SolverParameter) builds the solver its `type` names, as
caffe.get_solver and Caffe's SolverRegistry do.
"""
from .adaptive import AdaDeltaSolver, AdaGradSolver, AdamSolver, RMSPropSolver
from .lr_policies import LearningRateError, learning_rate
from .sgd import NesterovSolver, SGDSolver
from .solver import NONE, SNAPSHOT, STOP, Solver, SolverError, solver_parameter

SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                     AdaDeltaSolver, AdamSolver)}


def get_solver(param):
    """A solver of the type the solver definition names (default SGD)."""
    param = solver_parameter(param)
    cls = SOLVERS.get(param.type)
    if cls is None:
        raise SolverError('Unknown solver type: %s (known types: %s)'
                          % (param.type, ', '.join(sorted(SOLVERS))))
    return cls(param)


__all__ = ['get_solver', 'SOLVERS', 'Solver', 'SolverError', 'SGDSolver', 'NesterovSolver',
           'AdaGradSolver', 'RMSPropSolver', 'AdaDeltaSolver', 'AdamSolver', 'learning_rate',
           'LearningRateError', 'NONE', 'STOP', 'SNAPSHOT']
