"""What a checkpoint restores into a run where it continues, and the steps that restore it.

:class:`ResumeState` is the part of :class:`~mm_lightning.ConfigModule` that carries a checkpoint's state from
where it is read (an mmengine file through :mod:`mm_lightning.state.checkpoint`, or a Lightning checkpoint
through the module's ``on_load_checkpoint``) to where the run continues: the training progress, this rank's
position in the data, the random state, the gradients of an unfinished accumulation window, this rank's
buffers and the schedulers' states. It also writes the same state into a Lightning checkpoint, and runs
``load_from``/``resume`` where a fit or a standalone evaluation starts. Each step gets the run it acts on
(the module, through its :class:`~mm_lightning.runtime.contract.RunModule` protocol) as an argument.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from mmengine.optim import BaseOptimWrapper

from mm_lightning.config.loading import ConfigError
from mm_lightning.runtime.contract import RunModule
from mm_lightning.runtime.schedulers import load_scheduler_states
from mm_lightning.state import checkpoint as ckpt
from mm_lightning.state import rng
from mm_lightning.state.convert import HOOK_KEYS, STATE_KEY, own_rank_state
from mm_lightning.state.serialization import from_safe, to_safe

__all__ = ['ResumeState']


class ResumeState:
    """A checkpoint's state, held until the run reaches the point where each part is restored.

    Args:
        auto_scale_lr: the config's ``auto_scale_lr``: a checkpoint of another world size is refused unless the
            learning rate scales with it.
    """

    def __init__(self, auto_scale_lr: Optional[dict]) -> None:
        self._auto_scale_lr = auto_scale_lr
        # A checkpoint's random state and accumulated gradients, restored where the run continues
        self._random_state: Optional[rng.RngState] = None
        self._gradients: Optional[Dict[str, torch.Tensor]] = None
        self._rank_buffers: Optional[Dict[str, torch.Tensor]] = None  # this rank's own, where it differs from rank 0
        self._data_position: Optional[Dict[str, Any]] = None
        self._scheduler_states: Any = None  # a Lightning checkpoint's, for schedulers built later

    # -- load_from / resume ---------------------------------------------------------------------------
    def start_fit(self, module: RunModule, ckpt_path: Union[str, Path, None]) -> None:
        """``load_from``/``resume`` once the strategy has set up the model, unless the Trainer restores its
        ``ckpt_path`` (a Lightning checkpoint) instead."""
        if ckpt_path is None and not module.loaded:
            module.resumed = ckpt.load_or_resume(module)
        module.loaded = True

    def load_for_evaluation(self, module: RunModule, ckpt_path: Union[str, Path, None]) -> None:
        """``load_from`` before a standalone validation or test (once), unless the weights came from the
        Trainer's ``ckpt_path``."""
        if not module.loaded and ckpt_path is None:
            ckpt.load_or_resume(module, weights_only=True)
            module.loaded = True

    # -- a checkpoint's state, held -------------------------------------------------------------------
    def set_resume_state(self, module: RunModule, state: Dict[str, Any], meta: Dict[str, Any]) -> None:
        """Progress, data position and random state from a checkpoint of either format.

        A checkpoint mmengine wrote has only ``meta``'s counters: the position follows from them.
        """
        ckpt.check_world_size(state, module.context.world_size, self._auto_scale_lr)
        own = own_rank_state(state, module.context.rank)
        loop = state.get('loop')
        self._data_position = own.get('data')
        if loop is None or loop.get('from_meta'):
            loop = module.training_progress.state_from_meta(meta['epoch'], meta['iter'])
            self._data_position = {'train': module.runner.datamodule.train_stream.state_from_meta(meta['epoch'],
                                                                                                   meta['iter'])}
        module.training_progress.load_state_dict(loop)
        self._random_state = own.get('rng')
        self._gradients = own.get('gradients')
        # another number of ranks: each rank starts from rank 0's buffers, the checkpoint's weights
        self._rank_buffers = own.get('buffers') if state.get('world_size') == module.context.world_size else None
        module.resumed = True

    def load_scheduler_states(self, param_schedulers: Any) -> None:
        """A Lightning checkpoint's scheduler states into ``param_schedulers`` (built now), if one is held."""
        if self._scheduler_states is not None:
            load_scheduler_states(param_schedulers, self._scheduler_states)
            self._scheduler_states = None

    # -- restored where the run continues -------------------------------------------------------------
    def restore_continuation_state(self, module: RunModule) -> None:
        """The global random state, the gradients of an unfinished accumulation window and this rank's buffers
        the checkpoint was taken with (once, where the run continues, after the weights are loaded)."""
        if self._rank_buffers is not None:
            ckpt.restore_buffers(module, self._rank_buffers)
            self._rank_buffers = None
        if self._gradients is not None:
            ckpt.restore_gradients(module, self._gradients)
            self._gradients = None
        if self._random_state is not None:
            rng.restore(self._random_state)
            self._random_state = None

    def restore_data_position(self, datamodule: Any) -> None:
        """This rank's position in the training data from the checkpoint (once, where the run continues;
        after Lightning restored the datamodule's own state, which is rank 0's)."""
        if self._data_position is not None:
            datamodule.load_state_dict(self._data_position)
            self._data_position = None

    # -- Lightning checkpoints -------------------------------------------------------------------------
    def save_into(self, module: RunModule, checkpoint: Dict[str, Any], fitting: bool) -> None:
        """mm_lightning's state into a Lightning ``checkpoint``, and the hooks' ``before_save_checkpoint`` (as for
        an mmengine file), where a fit has built its training loop."""
        if module.progress is not None and fitting:
            loop_state = module.training_progress.snapshot()
            state = ckpt.training_state(module, loop_state)
            meta = ckpt.run_meta(module, {}, loop_state)
            view = ckpt.hook_view(checkpoint, meta)
            module.runner.call_hook('before_save_checkpoint', checkpoint=view)
            state[HOOK_KEYS] = ckpt.apply_hook_view(checkpoint, view)
            state['meta'] = to_safe(meta)
            state['optimizer_names'] = ckpt.optimizer_names(module.optim_wrapper)
            checkpoint[STATE_KEY] = state

    def load_from(self, module: RunModule, checkpoint: Dict[str, Any], fitting: bool) -> None:
        """The hooks' ``after_load_checkpoint`` on a Lightning ``checkpoint`` (before Lightning loads the weights),
        and, when ``fitting``, the training state it holds."""
        if fitting and STATE_KEY not in checkpoint:
            raise ConfigError('ckpt_path: this Lightning checkpoint has no mm_lightning state (it was not '
                              'written from a ConfigModule); convert an mmengine checkpoint with '
                              '`mm-lightning convert-checkpoint SRC.pth DST.ckpt`')
        state = from_safe(checkpoint.get(STATE_KEY) or {})
        module.resumed = fitting  # what hooks read as runner._resume (EMAHook restores its average)
        view = ckpt.hook_view(checkpoint, state.get('meta', {}))
        module.runner.call_hook('after_load_checkpoint', checkpoint=view)
        ckpt.apply_hook_view(checkpoint, view)
        if not fitting:
            return
        module.context.message_hub.load_state_dict(state['message_hub'])
        self._scheduler_states = state.get('param_schedulers')
        if isinstance(module.optim_wrapper, BaseOptimWrapper):
            # built already: strategies that restore after setup (FSDP2, DeepSpeed) load checkpoints then
            self.load_scheduler_states(module.param_schedulers)
        module.set_resume_state(state, state.get('meta', {}))
