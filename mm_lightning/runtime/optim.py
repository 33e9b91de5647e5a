"""Optimizer wrappers: built by mmengine, stepped through Lightning.

mmengine's ``OptimWrapper.update_params`` keeps its meaning (loss scaling for
``accumulative_counts``, when to step, clipping), so models that override
``train_step`` work unchanged. Only the three points where the device, distribution
and precision matter are routed to Lightning: ``backward`` goes through
``manual_backward``, ``step`` through the ``LightningOptimizer`` (strategy and precision
plugin), and skipped gradient synchronisation through the strategy.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from types import MethodType
from typing import Any, Callable, Iterator, Mapping, Optional, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy, ParallelStrategy
from mmengine.optim import BaseOptimWrapper, OptimWrapper, OptimWrapperDict
from mmengine.optim import build_optim_wrapper as mm_build_optim_wrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.optim import Optimizer

from mm_lightning.config.loading import ConfigError, config_error
from mm_lightning.config.registry import build, config_key
from mm_lightning.ground.internals import clip_grad, count_backward, count_steps, counts_steps
from mm_lightning.ground.parts import AnyOptimWrapper, wrappers_of  # noqa: F401  (re-exported)
from mm_lightning.translate.precision import AMP_WRAPPER, strip_amp

__all__ = ['AnyOptimWrapper', 'build_optim_wrapper', 'wrappers_of', 'scale_lr', 'clip_gradients',
           'route_through_lightning']



def build_optim_wrapper(model: nn.Module, cfg: Any) -> AnyOptimWrapper:
    """Build ``optim_wrapper`` in each form mmengine's Runner accepts.

    AMP settings are taken by the precision plugin (see :mod:`mm_lightning.translate.precision`).
    """
    if isinstance(cfg, Optimizer):  # mmengine wraps a bare optimizer
        return OptimWrapper(optimizer=cfg)
    if isinstance(cfg, BaseOptimWrapper):  # DeepSpeedOptimWrapper is no OptimWrapper
        if type(cfg).__name__ == AMP_WRAPPER:
            raise ConfigError('optim_wrapper: pass AmpOptimWrapper as a config dict; its loss scaling '
                              "becomes Lightning's precision plugin")
        return cfg
    if not isinstance(cfg, Mapping):
        raise config_error(f'optim_wrapper: optimizer wrapper should be an OptimWrapper object or dict, but got '
                           f'{cfg!r}', TypeError)
    cfg = strip_amp(dict(cfg))
    optimizer = cfg.get('optimizer')
    if isinstance(optimizer, Optimizer):
        cfg.setdefault('type', 'OptimWrapper')
        return build(OPTIM_WRAPPERS, cfg, 'optim_wrapper')
    if optimizer is not None or 'constructor' in cfg:
        with config_key('optim_wrapper'):
            return mm_build_optim_wrapper(model, cfg)
    wrappers = OrderedDict()
    for name, wrapper in cfg.items():
        if not isinstance(wrapper, OptimWrapper):
            raise ConfigError(f'optim_wrapper.{name}: each item mush be an optimizer object when "type" and '
                              f'"constructor" are not in optimizer (without `optimizer` or `constructor`, each '
                              f'entry must be a built OptimWrapper), got {wrapper!r}')
        wrappers[name] = wrapper
    return OptimWrapperDict(**wrappers)


def scale_lr(optim_wrapper: AnyOptimWrapper, auto_scale_lr: Optional[Mapping[str, Any]],
             batch_size: int, world_size: int, logger: Any) -> None:
    """mmengine's linear LR scaling rule, with the real world size."""
    if not auto_scale_lr or not auto_scale_lr.get('enable', False):
        return
    if 'base_batch_size' not in auto_scale_lr:
        raise config_error('auto_scale_lr: Lack of `base_batch_size` in `auto_scale_lr`.', AssertionError)
    real_bs = world_size * batch_size
    base_bs = auto_scale_lr['base_batch_size']
    ratio = float(real_bs) / float(base_bs)
    logger.info(f'LR is set based on batch size of {base_bs} and the current batch size is {real_bs}. '
                f'Scaling the original LR by {ratio}.')
    for wrapper in wrappers_of(optim_wrapper):
        for group in wrapper.optimizer.param_groups:
            group['lr'] = group['lr'] * ratio


class _LightningRoute:
    """A wrapper's backward, step and no-sync, done through a LightningModule's Trainer.

    Bound onto a built wrapper by :func:`route_through_lightning`; the wrapper keeps its own
    class and every other behaviour (``update_params``, ``should_update``, ``scale_loss``...).
    A wrapper that is no ``OptimWrapper`` (mmengine's ``DeepSpeedOptimWrapper``) accumulates
    nothing itself: its backward and step go through Lightning to DeepSpeed's engine, which does.
    """

    def __init__(self, wrapper: BaseOptimWrapper, module: pl.LightningModule, index: int) -> None:
        self.wrapper = wrapper
        self.module = module
        self.index = index

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        # Lightning decides whether DDP synchronises gradients when backward starts.
        with self.skip_sync_while_accumulating():
            self.module.manual_backward(loss, **kwargs)
        if isinstance(self.wrapper, OptimWrapper):
            count_backward(self.wrapper)

    def step(self, **kwargs: Any) -> None:
        # Clipping runs in ConfigModule.on_before_optimizer_step, after AMP unscaling.
        optimizers = self.module.optimizers()
        if isinstance(optimizers, list):
            optimizers = optimizers[self.index]
        optimizers.step(**kwargs)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with self.skip_sync_while_accumulating():
            yield

    def skip_sync_while_accumulating(self) -> Any:
        """mmengine's no-sync during accumulation, through the strategy (DDP's ``no_sync``)."""
        strategy = self.module.trainer.strategy
        if not isinstance(self.wrapper, OptimWrapper) or self.wrapper.should_sync() \
                or not isinstance(strategy, ParallelStrategy):
            return nullcontext()
        return strategy.block_backward_sync()


def clip_gradients(wrapper: OptimWrapper, strategy: Any) -> None:
    """The wrapper's ``clip_grad``, done as the strategy needs (after AMP unscaling).

    FSDP shards gradients, so a norm must be taken over all shards by the root FSDP
    module; elsewhere mmengine's own clipping runs unchanged (and logs ``train/grad_norm``).
    """
    if isinstance(strategy, FSDPStrategy) and wrapper.grad_name == 'grad_norm':
        root = cast(FullyShardedDataParallel, strategy.model)  # the root FSDP module, once set up
        norm = root.clip_grad_norm_(**wrapper.clip_grad_kwargs)
        wrapper.message_hub.update_scalar('train/grad_norm', float(norm))
    else:
        clip_grad(wrapper)


def _routed_step(route: _LightningRoute) -> Callable[..., None]:
    """The wrapper's ``step`` through ``route``, as a function to bind on the wrapper: mmengine's schedulers
    count a wrapper's steps by wrapping its bound ``step``."""
    def step(wrapper: BaseOptimWrapper, **kwargs: Any) -> None:
        route.step(**kwargs)
    return step


def route_through_lightning(optim_wrapper: AnyOptimWrapper, module: pl.LightningModule) -> None:
    """Route each wrapper's backward/step/no-sync through ``module``'s Trainer (in place).

    The routed methods are bound on the wrapper instance; its class, custom subclasses
    included, keeps everything else. ``step`` stays a method of the wrapper, and keeps the step
    counter of parameter schedulers built before it (mmengine's schedulers count the wrapper's
    steps and warn that ``optimizer.step()`` was overridden when the count is gone). A wrapper
    already routed through ``module`` is left as it is (a later fit of the same run).
    """
    for index, wrapper in enumerate(wrappers_of(optim_wrapper)):
        routed = getattr(wrapper.backward, '__self__', None)
        if isinstance(routed, _LightningRoute) and routed.module is module:
            continue
        counted = counts_steps(wrapper)
        route = _LightningRoute(wrapper, module, index)
        wrapper.backward = route.backward
        wrapper.step = MethodType(_routed_step(route), wrapper)
        wrapper.optim_context = route.optim_context
        if counted:
            count_steps(wrapper)
