"""A config's ``lightning.Trainer`` arguments: loop lengths, cadence, devices, precision, callbacks.

The fixed settings below keep Lightning from doing what mmengine never does (sanity
validation, swapping samplers, its own checkpoints and logs; see :mod:`mm_lightning.runtime.fidelity`);
hooks bridged by :class:`~mm_lightning.runtime.bridge.HookBridge` do mmengine's checkpointing and
logging. A progress bar is optional (``progress_bar``). A
config may add or override Trainer arguments under ``lightning_trainer=dict(...)``.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, Mapping, Optional

from mmengine.config import Config

from mm_lightning.config.loading import ConfigLike, default_work_dir, load_config
from mm_lightning.config.validation import validate_config
from mm_lightning.runtime.fidelity import TRAINER_SETTINGS
from mm_lightning.runtime.hooks import build_lightning_callbacks
from mm_lightning.runtime.trainer_settings import lightning_epochs
from mm_lightning.translate.launchers import config_layout
from mm_lightning.translate.precision import precision_settings
from mm_lightning.translate.profiling import build_profiler
from mm_lightning.translate.progress import build_progress_bar
from mm_lightning.translate.strategies import build_strategy, strategy_context

__all__ = ['lightning_epochs', 'trainer_kwargs']


def trainer_kwargs(cfg: ConfigLike | Mapping[str, Any], *, launcher: Optional[str] = None,
                   accelerator: Optional[str] = None, devices: Any = None, num_nodes: Optional[int] = None,
                   **overrides: Any) -> Dict[str, Any]:
    """Keyword arguments for ``lightning.Trainer`` that run ``cfg`` as mmengine would.

    Works on a config file, dict or ``Config`` without building or starting anything
    but the callbacks the config names. The layout (``launcher``, ``accelerator``,
    ``devices`` per node, ``num_nodes``) comes from these arguments, then from the config,
    then from the launcher's environment and this machine: give all four to translate
    for another machine. ``overrides`` win over everything.

    Args:
        cfg: an mmengine config: a file path, a dict or a ``Config``.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``. None: the config's ``launcher``, else
            inferred from the environment as mmengine does.
        accelerator: ``'cpu'``, ``'gpu'`` (``'cuda'``) or ``'auto'``. None: ``lightning_trainer.accelerator``,
            else this machine's.
        devices: devices per node. None: ``lightning_trainer.devices``, else the launcher's environment
            (1 without a launcher).
        num_nodes: number of nodes. None: ``lightning_trainer.num_nodes``, else the launcher's environment
            (1 without a launcher).
        **overrides: ``Trainer`` arguments set last (e.g. ``logger``), over everything above.

    Returns:
        ``lightning.Trainer`` keyword arguments: the fixed settings of :mod:`mm_lightning.runtime.fidelity`,
        ``default_root_dir`` (the ``work_dir``; ``work_dirs/<config name>`` without one), ``max_epochs`` from
        ``train_cfg``, ``limit_val_batches=0`` without a ``val_dataloader``, ``strategy`` (from ``strategy``
        or Runner-style ``model_wrapper_cfg``), ``benchmark`` (``env_cfg.cudnn_benchmark``), precision from
        ``optim_wrapper``, ``callbacks`` (the Lightning callbacks in ``custom_hooks``, and the
        ``progress_bar``), ``profiler``; then ``lightning_trainer``'s entries, ``accelerator``, ``devices``,
        ``num_nodes`` and ``overrides``, in that order.

    Raises:
        ConfigError: the config cannot be read, or a value cannot be translated (the message names its key);
            also when a launcher's environment variables are missing and ``devices``/``num_nodes`` are not
            given.
    """
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    validate_config(cfg, stages=('run',))  # a ConfigModule checks each stage's keys when it starts
    kwargs: Dict[str, Any] = dict(TRAINER_SETTINGS)
    kwargs['default_root_dir'] = osp.abspath(cfg.get('work_dir') or default_work_dir(cfg))
    if cfg.get('val_dataloader') is None:
        kwargs['limit_val_batches'] = 0  # nothing to validate: Lightning need not ask for a loader
    epochs = lightning_epochs(cfg.get('train_cfg'))
    if epochs is not None:
        kwargs['max_epochs'] = epochs
    layout = config_layout(cfg, launcher, accelerator, devices, num_nodes)
    strategy = build_strategy(cfg.get('strategy'), strategy_context(cfg, layout))
    kwargs['strategy'] = strategy
    if (cfg.get('env_cfg') or {}).get('cudnn_benchmark'):
        kwargs['benchmark'] = True
    kwargs.update(precision_settings(cfg.get('optim_wrapper'), strategy, layout.accelerator))
    kwargs['callbacks'] = build_lightning_callbacks(cfg.get('custom_hooks'))
    progress_bar = build_progress_bar(cfg.get('progress_bar'))
    if progress_bar is not None:
        kwargs.update(enable_progress_bar=True)
        kwargs['callbacks'].append(progress_bar)
    profiler = build_profiler(cfg.get('profiler'), kwargs['default_root_dir'])
    if profiler is not None:
        kwargs['profiler'] = profiler
    kwargs.update(cfg.get('lightning_trainer') or {})
    kwargs.update(accelerator=layout.accelerator, devices=layout.devices, num_nodes=layout.num_nodes)
    kwargs.update(overrides)
    return kwargs
