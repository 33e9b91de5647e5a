"""Helpers over mmengine's built parts that the checkpoint functions and the runtime share: the single
optim wrappers of an ``OptimWrapperDict``, and parameter schedulers' states in mmengine's layout."""
from __future__ import annotations

from typing import Any, Dict, List, Union

from mmengine.optim import OptimWrapper, OptimWrapperDict

from mm_lightning.ground.internals import ParamScheduler

__all__ = ['AnyOptimWrapper', 'ParamSchedulers', 'wrappers_of', 'scheduler_states', 'load_scheduler_states']

AnyOptimWrapper = Union[OptimWrapper, OptimWrapperDict]
ParamSchedulers = Union[List[ParamScheduler], Dict[str, List[ParamScheduler]]]


def wrappers_of(optim_wrapper: AnyOptimWrapper) -> List[OptimWrapper]:
    """The single wrappers, in the order their optimizers are given to Lightning."""
    if isinstance(optim_wrapper, OptimWrapperDict):
        return list(optim_wrapper.values())
    return [optim_wrapper]


def scheduler_states(schedulers: ParamSchedulers) -> Any:
    """The schedulers' states in mmengine's checkpoint layout (a list, or a dict of lists)."""
    if isinstance(schedulers, dict):
        return {name: [s.state_dict() for s in group] for name, group in schedulers.items()}
    return [s.state_dict() for s in schedulers]


def load_scheduler_states(schedulers: ParamSchedulers, states: Any) -> None:
    """Inverse of :func:`scheduler_states`."""
    if isinstance(schedulers, dict):
        for name, group in schedulers.items():
            for scheduler, state in zip(group, states[name]):
                scheduler.load_state_dict(state)
    else:
        for scheduler, state in zip(schedulers, states):
            scheduler.load_state_dict(state)
