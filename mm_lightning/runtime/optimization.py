"""The run's optimization as mmengine's Runner sets it up: the optim wrapper and schedulers built from their configs,
the learning rate scaled once, and the optimizers handed to Lightning with their wrappers' clipping.

:class:`Optimization` is the part of :class:`~mm_lightning.ConfigModule` that does this. The optim wrapper and the
schedulers themselves stay the module's (``optim_wrapper``, ``param_schedulers``: hooks and the runner view read
and assign them); each step gets the module it builds them for.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import lightning.pytorch as pl
from mmengine.optim import OptimWrapper
from torch.optim import Optimizer

from mm_lightning.ground.internals import batch_size
from mm_lightning.runtime.contract import RunModule
from mm_lightning.runtime.optim import (
    AnyOptimWrapper,
    build_optim_wrapper,
    clip_gradients,
    route_through_lightning,
    scale_lr,
    wrappers_of,
)
from mm_lightning.runtime.schedulers import build_param_schedulers

__all__ = ['Optimization']


class Optimization:
    """What building and stepping a run's optimizers keeps between calls.

    Args:
        auto_scale_lr: the config's ``auto_scale_lr`` (None: the learning rate is not scaled).
    """

    def __init__(self, auto_scale_lr: Optional[dict]) -> None:
        self._auto_scale_lr = auto_scale_lr
        self._lr_scaled = False
        self._wrapper_of_optimizer: Dict[int, OptimWrapper] = {}

    def build(self, module: RunModule) -> None:
        """``module``'s optim wrapper (LR scaled once, as mmengine's ``scale_lr``) and parameter schedulers, built
        from their configs as mmengine's Runner builds them; built ones are kept."""
        module.optim_wrapper = build_optim_wrapper(module.model, module.optim_wrapper)
        if not self._lr_scaled:  # once, before the schedulers record the initial LRs
            self._lr_scaled = True
            scale_lr(module.optim_wrapper, self._auto_scale_lr, batch_size(module.built_train_loop.dataloader),
                     module.context.world_size, module.context.logger)
        if module.param_schedulers is not None:
            module.param_schedulers = build_param_schedulers(module.param_schedulers, module.optim_wrapper,
                                                             module.train_loop)

    def hand_to_lightning(self, optim_wrapper: AnyOptimWrapper, module: pl.LightningModule) -> List[Optimizer]:
        """The optimizers of the built ``optim_wrapper``, for ``module``'s ``configure_optimizers``: their backward
        and step routed through Lightning (see :mod:`mm_lightning.runtime.optim`)."""
        route_through_lightning(optim_wrapper, module)
        wrappers = wrappers_of(optim_wrapper)
        self._wrapper_of_optimizer = {id(w.optimizer): w for w in wrappers}
        return [w.optimizer for w in wrappers]

    def clip(self, optimizer: Optimizer, strategy: object) -> None:
        """The clipping ``optimizer``'s wrapper is configured with, before Lightning steps it (the precision plugin
        has unscaled the gradients)."""
        wrapper = self._wrapper_of_optimizer.get(id(optimizer))
        if wrapper is not None and getattr(wrapper, 'clip_grad_kwargs', None):
            clip_gradients(wrapper, strategy)
