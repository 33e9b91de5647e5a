"""mmengine-format checkpoints, written and read both ways.

Files carry what mmengine's Runner writes (bare model keys, ``meta``, ``optimizer``,
``param_schedulers``, ``message_hub``), so mmengine's ``load_checkpoint`` and
``load_from`` read them. mmengine 0.10 pickles ``HistoryBuffer`` objects, which
``torch.load``'s default ``weights_only=True`` refuses; we store them (and numpy
arrays) as tagged plain data so our files load safely, and turn them back on resume.
"""
from __future__ import annotations

import copy
import pickle
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Union

import mmengine
import numpy as np
import torch
from mmengine.fileio import FileClient, join_path
from mmengine.logging import HistoryBuffer
from mmengine.optim import OptimWrapper
from mmengine.runner.checkpoint import (_load_checkpoint, _load_checkpoint_to_model, save_checkpoint,
                                        weights_to_cpu)
from mmengine.utils import apply_to, get_git_hash

from .config import ConfigError

HISTORY_BUFFER_TAG = '__history_buffer__'
NDARRAY_TAG = '__ndarray__'

def to_safe(obj: Any) -> Any:
    """Replace HistoryBuffers and numpy values by tagged plain data (see module doc)."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {HISTORY_BUFFER_TAG: True, 'log_history': torch.from_numpy(np.asarray(log, dtype=np.float64)),
                'count_history': torch.from_numpy(np.asarray(count, dtype=np.float64)),
                'max_length': obj.max_length}
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return {NDARRAY_TAG: True, 'data': torch.from_numpy(np.ascontiguousarray(obj)), 'dtype': str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    return _map_containers(obj, to_safe)


def from_safe(obj: Any) -> Any:
    """Inverse of :func:`to_safe`."""
    if isinstance(obj, dict):
        if obj.get(HISTORY_BUFFER_TAG) is True:
            return HistoryBuffer(obj['log_history'].tolist(), obj['count_history'].tolist(), obj['max_length'])
        if obj.get(NDARRAY_TAG) is True:
            return obj['data'].numpy().astype(obj['dtype'])
    return _map_containers(obj, from_safe)


def _map_containers(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to the values of dicts (keeping their type: OrderedDict, Counter...) and lists."""
    if isinstance(obj, dict):
        mapped = copy.copy(obj)
        for key, value in obj.items():
            mapped[key] = fn(value)
        return mapped
    if type(obj) in (list, tuple):
        return type(obj)(fn(value) for value in obj)
    return obj


class UnsafeCheckpointError(ValueError):
    """A checkpoint that ``torch.load(weights_only=True)`` refuses (see :func:`convert_checkpoint`)."""


def read_checkpoint(filename: str, map_location: Any = 'cpu') -> dict:
    """Load a checkpoint with ``weights_only=True`` and restore tagged values."""
    try:
        checkpoint = _load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'{filename}: this checkpoint pickles Python objects that torch.load(weights_only=True) refuses '
            '(mmengine 0.10 stores HistoryBuffer objects in its message hub). If you trust the file, convert '
            f'it once: `mm-lightning convert-checkpoint {filename} OUT.pth`') from err
    return from_safe(checkpoint)


def convert_checkpoint(src: str, dst: str) -> None:
    """Rewrite a trusted mmengine checkpoint in the safe form (unpickles ``src`` fully)."""
    checkpoint = torch.load(src, map_location='cpu', weights_only=False)
    torch.save(to_safe(checkpoint), dst)


def build_checkpoint(runner: Any, meta: dict, save_optimizer: bool, save_param_scheduler: bool) -> dict:
    """The dict mmengine's ``Runner.save_checkpoint`` writes, in safe form."""
    meta.update(cfg=runner.cfg.pretty_text, seed=runner.seed, experiment_name=runner.experiment_name,
                time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                mmengine_version=mmengine.__version__ + get_git_hash())
    if hasattr(runner.train_dataloader.dataset, 'metainfo'):
        meta.update(dataset_meta=runner.train_dataloader.dataset.metainfo)
    checkpoint: Dict[str, Any] = {
        'meta': meta,
        'state_dict': weights_to_cpu(runner.model.state_dict()),
        'message_hub': apply_to(runner.message_hub.state_dict(), lambda x: hasattr(x, 'cpu'), lambda x: x.cpu()),
    }
    if save_optimizer:
        if not isinstance(runner.optim_wrapper, OptimWrapper):
            raise TypeError(f'runner.optim_wrapper should be an OptimWrapper or OptimWrapperDict, '
                            f'got {runner.optim_wrapper!r}')
        checkpoint['optimizer'] = apply_to(runner.optim_wrapper.state_dict(), lambda x: hasattr(x, 'cpu'),
                                           lambda x: x.cpu())
        scaler = runner.grad_scaler
        if scaler is not None:  # where AmpOptimWrapper keeps it
            checkpoint['optimizer']['loss_scaler'] = scaler.state_dict()
    if save_param_scheduler and runner.param_schedulers is None:
        runner.logger.warning('`save_param_scheduler` is True but `self.param_schedulers` is None, '
                              'so skip saving parameter schedulers')
        save_param_scheduler = False
    if save_param_scheduler:
        if isinstance(runner.param_schedulers, dict):
            checkpoint['param_schedulers'] = {name: [s.state_dict() for s in group]
                                              for name, group in runner.param_schedulers.items()}
        else:
            checkpoint['param_schedulers'] = [s.state_dict() for s in runner.param_schedulers]
    return checkpoint


def checkpoint_path(out_dir: str, filename: str, file_client_args: Optional[dict],
                    backend_args: Optional[dict]) -> str:
    if file_client_args is not None:
        warnings.warn('"file_client_args" will be deprecated in future. Please use "backend_args" instead',
                      DeprecationWarning)
        if backend_args is not None:
            raise ValueError('"file_client_args" and "backend_args" cannot be set at the same time.')
        return FileClient.infer_client(file_client_args, out_dir).join_path(out_dir, filename)
    return join_path(out_dir, filename, backend_args=backend_args)


def write_checkpoint(checkpoint: dict, filepath: str, file_client_args: Optional[dict] = None,
                     backend_args: Optional[dict] = None) -> None:
    save_checkpoint(to_safe(checkpoint), filepath, file_client_args=file_client_args,
                    backend_args=backend_args)


def load_into_model(model: torch.nn.Module, checkpoint: dict, strict: bool, revise_keys: list) -> dict:
    return _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=revise_keys)


def restore_training_state(runner: Any, checkpoint: dict, resume_optimizer: bool,
                           resume_param_scheduler: bool) -> None:
    """What mmengine's ``Runner.resume`` restores besides weights."""
    meta = checkpoint['meta']
    runner.train_loop.resume_from(meta['epoch'], meta['iter'])
    if 'config' in meta:
        previous_gpu_ids = mmengine.Config.fromstring(meta['config'], file_format='.py').get('gpu_ids')
        if previous_gpu_ids and len(previous_gpu_ids) != runner.world_size:
            auto_scale_lr = runner._auto_scale_lr
            if not auto_scale_lr or not auto_scale_lr.get('enable', False):
                raise RuntimeError('Number of GPUs used for current experiment is not consistent with the '
                                   'checkpoint being resumed from. Set auto_scale_lr.enable=True.')
    resumed_seed = meta.get('seed')
    current_seed = runner._randomness_cfg.get('seed')
    if resumed_seed is not None and resumed_seed != current_seed:
        if current_seed is not None:
            runner.logger.warning(f'The value of random seed in the checkpoint "{resumed_seed}" is different '
                                  f'from the value in `randomness` config "{current_seed}"')
        runner._reseed(resumed_seed)
    dataset_meta = getattr(runner.train_dataloader.dataset, 'metainfo', None)
    if pickle.dumps(meta.get('dataset_meta')) != pickle.dumps(dataset_meta):
        runner.logger.warning('The dataset metainfo from the resumed checkpoint is different from the current '
                              'training dataset, please check the correctness of the checkpoint or the '
                              'training dataset.')
    runner.message_hub.load_state_dict(checkpoint['message_hub'])
    if 'optimizer' in checkpoint and resume_optimizer:
        state = dict(checkpoint['optimizer'])
        scaler_state = state.pop('loss_scaler', None)
        runner.optim_wrapper.load_state_dict(state)
        if scaler_state is not None and runner.grad_scaler is not None:
            runner.grad_scaler.load_state_dict(scaler_state)
    if resume_param_scheduler and runner.param_schedulers is None:
        runner.logger.warning('`resume_param_scheduler` is True but `self.param_schedulers` is None, '
                              'so skip resuming parameter schedulers')
        resume_param_scheduler = False
    if 'param_schedulers' in checkpoint and resume_param_scheduler:
        saved = checkpoint['param_schedulers']
        if isinstance(runner.param_schedulers, dict):
            for name, group in runner.param_schedulers.items():
                for scheduler, state in zip(group, saved[name]):
                    scheduler.load_state_dict(state)
        else:
            for scheduler, state in zip(runner.param_schedulers, saved):
                scheduler.load_state_dict(state)


def missing_resume_file(path: str) -> ConfigError:
    return ConfigError(f'resume: checkpoint file not found: {path!r}')


MapLocation = Union[str, Callable, None]
