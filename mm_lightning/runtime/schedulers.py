"""Parameter schedulers, built by mmengine as its Runner builds them.

They are stepped by mmengine's ``ParamSchedulerHook`` at mmengine's points (after each
iteration / after each epoch, before that epoch's validation), so the learning rate at
every iteration equals mmengine's.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import PARAM_SCHEDULERS
from mmengine.runner.base_loop import BaseLoop

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.registry import build
from mm_lightning.ground.internals import ParamScheduler
from mm_lightning.ground.parts import ParamSchedulers, load_scheduler_states, scheduler_states  # noqa: F401  (re-exported)

__all__ = ['ParamSchedulers', 'build_param_schedulers', 'scheduler_states', 'load_scheduler_states']



def build_param_schedulers(cfg: Any, optim_wrapper: Union[OptimWrapper, OptimWrapperDict],
                           train_loop: Optional[BaseLoop]) -> ParamSchedulers:
    """One list per optimizer; a dict of lists for ``OptimWrapperDict`` (as mmengine)."""
    if not isinstance(optim_wrapper, OptimWrapperDict):
        return _build_for_one(cfg, optim_wrapper, train_loop, 'param_scheduler')
    schedulers: Dict[str, List[ParamScheduler]] = {}
    per_optimizer = isinstance(cfg, Mapping) and 'type' not in cfg
    for name, wrapper in optim_wrapper.items():
        if per_optimizer:
            if name not in cfg:
                raise ConfigError(f'param_scheduler: no entry for optimizer {name!r}; '
                                  f'entries are {sorted(cfg)}')
            schedulers[name] = _build_for_one(cfg[name], wrapper, train_loop, f'param_scheduler.{name}')
        else:
            schedulers[name] = _build_for_one(cfg, wrapper, train_loop, 'param_scheduler')
    return schedulers


def _build_for_one(cfg: Any, optim_wrapper: OptimWrapper, train_loop: Optional[BaseLoop],
                   key: str) -> List[ParamScheduler]:
    items: Sequence[Any] = cfg if isinstance(cfg, Sequence) and not isinstance(cfg, str) else [cfg]
    built: List[ParamScheduler] = []
    for index, item in enumerate(items):
        item_key = f'{key}[{index}]' if len(items) > 1 else key
        if isinstance(item, ParamScheduler):
            built.append(item)
            continue
        if not isinstance(item, Mapping):
            raise config_error(f'{item_key}: scheduler should be a _ParamScheduler object or dict, but got {item!r}',
                               TypeError)
        item = copy.deepcopy(dict(item))
        default_args: Dict[str, Any] = dict(optimizer=optim_wrapper)
        if train_loop is not None:
            item.setdefault('end', train_loop.max_epochs if item.get('by_epoch', True) else train_loop.max_iters)
            default_args['epoch_length'] = len(train_loop.dataloader)
        built.append(build(PARAM_SCHEDULERS, item, item_key, default_args=default_args))
    return built
