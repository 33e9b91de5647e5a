"""A LightningModule that runs an mmengine model's ``train_step``/``val_step``/``test_step``.

Training uses Lightning's manual optimization: the model's own ``train_step`` (default
or overridden, one optimizer or several) calls ``optim_wrapper.update_params``, whose
backward and step go through Lightning (see :mod:`mm_lightning.optim`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from mmengine.runner.amp import autocast
from mmengine.runner.loops import _parse_losses, _update_losses
from torch.optim import Optimizer

from .config import CfgOptions, ConfigLike, load_config
from .optim import clip_gradients, wrappers_of


def _is_scalar(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return getattr(value, 'ndim', 0) == 0


class ConfigModule(pl.LightningModule):
    """The model of a config-built run, for a Lightning ``Trainer``.

    Build it with :meth:`from_config`. It carries the run's mmengine hooks as a
    callback (``configure_callbacks``), so any Trainer reproduces the config's behaviour;
    ``mm_lightning.trainer_kwargs(cfg)`` gives the matching Trainer settings.
    ``metrics[stage]`` holds the last evaluation's metrics as mmengine returns them.
    """

    def __init__(self, runner: Any) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = runner.model
        self._runner = runner
        self.metrics: Dict[str, dict] = {}
        self._eval_losses: dict = {}
        self._wrapper_of_optimizer: Dict[int, Any] = {}

    @classmethod
    def from_config(cls, cfg: ConfigLike, cfg_options: CfgOptions = None) -> 'ConfigModule':
        """Build the run described by ``cfg`` and return its LightningModule."""
        from .runner import FlexibleRunner
        return FlexibleRunner.from_cfg(load_config(cfg, cfg_options)).lightning_module

    @property
    def runner(self) -> Any:
        """The :class:`~mm_lightning.FlexibleRunner` facade that mmengine hooks receive."""
        return self._runner

    def configure_callbacks(self) -> List[Callback]:
        return [self._runner.hook_bridge]

    def compile_model(self, compile_cfg: Union[bool, Dict[str, Any]], logger: Any) -> None:
        """mmengine's ``compile``: ``torch.compile`` the model's ``train_step`` (or ``target``)."""
        if not compile_cfg:
            return
        options = dict(compile_cfg) if isinstance(compile_cfg, dict) else {}
        target = options.pop('target', 'train_step')
        setattr(self.model, target, torch.compile(getattr(self.model, target), **options))
        logger.info('Model has been "compiled". The first few iterations will be slow, please be patient.')

    def configure_optimizers(self) -> Optional[List[Optimizer]]:
        if self._runner.optim_wrapper is None or isinstance(self._runner.optim_wrapper, dict):
            return None
        wrappers = wrappers_of(self._runner.optim_wrapper)
        self._wrapper_of_optimizer = {id(w.optimizer): w for w in wrappers}
        return [w.optimizer for w in wrappers]

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return self.model.train_step(batch, optim_wrapper=self._runner.optim_wrapper)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        wrapper = self._wrapper_of_optimizer.get(id(optimizer))
        if wrapper is not None and getattr(wrapper, 'clip_grad_kwargs', None):
            clip_gradients(wrapper, self.trainer.strategy)  # the precision plugin has unscaled gradients

    # -- evaluation -------------------------------------------------------------------------
    def _loop(self, mode: str) -> Any:
        return self._runner.val_loop if mode == 'val' else self._runner.test_loop

    def _eval_epoch_start(self, mode: str) -> None:
        self._eval_losses = {}
        loop = self._loop(mode)
        loop.evaluator.start(len(loop.dataloader.dataset))

    def _eval_step(self, mode: str, batch: Any) -> Any:
        loop = self._loop(mode)
        with autocast(enabled=loop.fp16):
            outputs = getattr(self.model, f'{mode}_step')(batch)
        outputs, self._eval_losses = _update_losses(outputs, self._eval_losses)
        loop.evaluator.process(data_samples=outputs, data_batch=batch)
        return outputs

    def _eval_epoch_end(self, mode: str) -> None:
        loop = self._loop(mode)
        metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
        if self._eval_losses:
            metrics.update(_parse_losses(self._eval_losses, mode))
        self.metrics[mode] = metrics
        scalars = {key: float(value) for key, value in metrics.items() if _is_scalar(value)}
        if scalars:
            # Already global (gathered by torchmetrics); averaging equal values across ranks keeps them.
            self.log_dict(scalars, sync_dist=self._runner.world_size > 1)

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self._eval_step('val', batch)

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self._eval_step('test', batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start('val')

    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start('test')

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end('val')

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end('test')
