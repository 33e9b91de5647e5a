"""The model made ready to run, as mmengine's Runner makes it: ``init_weights`` once, the sub-module features
the config turns on, and ``compile``.

:class:`ModelPreparation` is the part of :class:`~mm_lightning.ConfigModule` that does this; each step gets the
model it acts on (hooks may replace the module's model).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from lightning.pytorch.strategies import ModelParallelStrategy, Strategy
from mmengine.model import BaseModel
from mmengine.model.efficient_conv_bn_eval import turn_on_efficient_conv_bn_eval
from mmengine.runner.activation_checkpointing import turn_on_activation_checkpointing

from mm_lightning.translate.sharding import shard_for

__all__ = ['ModelPreparation']


class ModelPreparation:
    """``init_weights`` done once, and the config's ``compile``.

    Args:
        compile_cfg: the config's ``compile``: falsy: none; True or a dict of ``torch.compile`` options, with
            ``target`` the method compiled (``train_step`` by default).
    """

    def __init__(self, compile_cfg: Any) -> None:
        self.compile_cfg = compile_cfg
        self._weights_ready = False

    def initialize_weights(self, model: BaseModel, cfg: Mapping[str, Any], logger: logging.Logger,
                           stage: str) -> None:
        """``init_weights`` once, before the strategy wraps the model (DDP then broadcasts rank 0's), and, for a
        fit, the config's ``activation_checkpointing`` and ``efficient_conv_bn_eval``."""
        if stage == 'fit' or cfg.get('init_weights_for_test_or_val', True):
            if not self._weights_ready and hasattr(model, 'init_weights'):
                model.init_weights()
            self._weights_ready = True
        if stage == 'fit':
            for key, turn_on in (('activation_checkpointing', turn_on_activation_checkpointing),
                                 ('efficient_conv_bn_eval', turn_on_efficient_conv_bn_eval)):
                modules = cfg.get(key)
                if modules is not None:
                    logger.info(f'Enabling the "{key}" feature for sub-modules: {modules}')
                    turn_on(model, modules)

    def shard(self, model: BaseModel, strategy: Strategy) -> None:
        """Shard ``model`` under FSDP2 (``ModelParallelStrategy``): after ``init_weights``, before the optimizers
        are built over its parameters (see :mod:`mm_lightning.translate.sharding`)."""
        if isinstance(strategy, ModelParallelStrategy):
            shard_for(strategy, model)

    def compile(self, model: BaseModel, logger: logging.Logger) -> None:
        """mmengine's ``compile``: ``torch.compile`` the model's ``train_step`` (or ``target``)."""
        if not self.compile_cfg:
            return
        options = dict(self.compile_cfg) if isinstance(self.compile_cfg, dict) else {}
        target = options.pop('target', 'train_step')
        setattr(model, target, torch.compile(getattr(model, target), **options))
        logger.info('Model has been "compiled". The first few iterations will be slow, please be patient.')
