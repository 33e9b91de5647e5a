"""A config's ``lightning.Trainer`` arguments: loop lengths, cadence, devices, precision, callbacks.

The fixed settings below keep Lightning from doing what mmengine never does (sanity
validation, swapping samplers, its own checkpoints and logs); hooks bridged by
:class:`~mm_lightning.hooks.HookBridge` do mmengine's checkpointing and logging. A
config may ask for Lightning's progress bar (``progress_bar='tqdm'`` or ``'rich'``) and
add or override Trainer arguments under ``lightning_trainer=dict(...)``.
"""
from __future__ import annotations

import logging
import os.path as osp
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from mmengine.config import Config
from mmengine.logging import MessageHub, MMLogger
from typing_extensions import override

from .config import ConfigError, ConfigLike, load_config
from .hooks import build_lightning_callbacks
from .loops import parse_train_cfg
from .precision import precision_settings
from .strategies import StrategyContext, accelerator_name, build_strategy, resolve_launcher, world_layout
from .validation import validate_config

#: Trainer settings that make Lightning run a config the way mmengine's Runner does.
FIXED_SETTINGS: Dict[str, Any] = dict(
    num_sanity_val_steps=0,         # mmengine never validates before training
    use_distributed_sampler=False,  # mmengine's samplers already shard and pad
    enable_checkpointing=False,     # CheckpointHook writes mmengine-format checkpoints
    logger=False,                   # LoggerHook writes mmengine logs; vis_backends add loggers
    enable_progress_bar=False,      # mmengine-style log lines, unless the config sets progress_bar
    enable_model_summary=False,
    inference_mode=False,           # evaluation under torch.no_grad(), as mmengine
    accumulate_grad_batches=1,      # optim_wrapper.accumulative_counts accumulates
    check_val_every_n_epoch=1,      # the hook bridge schedules validation (mmengine's rules)
    max_steps=-1,
)


class ConsoleProgress(ProgressBar):
    """What a progress bar changes on the console of an mmengine run.

    While the bar draws, mmengine's INFO lines (``LoggerHook``'s every ``interval``
    iterations) would break it: they go to the run's log file only, warnings and errors
    still reach the console. The bar shows mmengine's latest training losses and LR.
    """

    #: MessageHub scalars (``train/<name>``) shown on the bar.
    SHOWN = re.compile(r'^train/(.*loss.*|lr|grad_norm)$')

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quieted: List[Tuple[logging.Handler, int]] = []

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        for handler in MMLogger.get_current_instance().handlers:
            if type(handler) is logging.StreamHandler and handler.level < logging.WARNING:  # not a FileHandler
                self._quieted.append((handler, handler.level))
                handler.setLevel(logging.WARNING)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        for handler, level in self._quieted:
            handler.setLevel(level)
        self._quieted.clear()

    @override
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        for key, history in MessageHub.get_current_instance().log_scalars.items():
            shown = self.SHOWN.match(key)
            if shown:
                metrics[shown.group(1)] = float(history.current())
        return metrics


class TQDMConsoleProgress(ConsoleProgress, TQDMProgressBar):
    """Lightning's tqdm bar for an mmengine run."""


class RichConsoleProgress(ConsoleProgress, RichProgressBar):
    """Lightning's rich bar for an mmengine run (needs the ``rich`` package)."""


#: ``progress_bar`` config values (``--progress-bar`` on the command line) -> the progress bar.
PROGRESS_BARS: Dict[str, Optional[Type[ProgressBar]]] = dict(
    none=None,
    tqdm=TQDMConsoleProgress,
    rich=RichConsoleProgress,
)


def trainer_kwargs(cfg: ConfigLike | Mapping[str, Any], **overrides: Any) -> Dict[str, Any]:
    """Keyword arguments for ``lightning.Trainer`` that run ``cfg`` as mmengine would.

    Works on a config file, dict or ``Config`` without building or starting anything
    but the callbacks the config names. ``overrides`` win over everything.
    """
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    validate_config(cfg)
    kwargs: Dict[str, Any] = dict(FIXED_SETTINGS)
    kwargs['default_root_dir'] = osp.abspath(cfg.get('work_dir', 'work_dirs'))
    if cfg.get('val_dataloader') is None:
        kwargs['limit_val_batches'] = 0  # nothing to validate: Lightning need not ask for a loader
    train_cfg = cfg.get('train_cfg')
    if train_cfg is not None:
        parsed = parse_train_cfg(train_cfg)
        kwargs['max_epochs'] = parsed['max_epochs'] if parsed['by_epoch'] else 1
    launcher = resolve_launcher(cfg.get('launcher'))
    env_cfg = cfg.get('env_cfg') or {}
    accelerator = accelerator_name()
    context = StrategyContext(launcher=launcher, env_cfg=env_cfg, accelerator=accelerator,
                              train_batch_size=_batch_size(cfg.get('train_dataloader')), runner_cfg=cfg)
    strategy = build_strategy(cfg.get('strategy'), context)
    kwargs.update(accelerator=accelerator, **world_layout(launcher), strategy=strategy)
    if env_cfg.get('cudnn_benchmark'):
        kwargs['benchmark'] = True
    kwargs.update(precision_settings(cfg.get('optim_wrapper'), strategy, accelerator))
    kwargs['callbacks'] = build_lightning_callbacks(cfg.get('custom_hooks'))
    progress_bar = build_progress_bar(cfg.get('progress_bar'))
    if progress_bar is not None:
        kwargs.update(enable_progress_bar=True)
        kwargs['callbacks'].append(progress_bar)
    kwargs.update(cfg.get('lightning_trainer') or {})
    kwargs.update(overrides)
    return kwargs


def build_progress_bar(name: Optional[str]) -> Optional[ProgressBar]:
    """The Lightning progress bar callback ``progress_bar`` names (``None``/``'none'``: no bar)."""
    bar = PROGRESS_BARS[name or 'none']
    if bar is None:
        return None
    try:
        return bar()
    except ModuleNotFoundError as err:
        raise ConfigError(f'progress_bar: {name!r} needs a package that is not installed ({err})') from err


def _batch_size(dataloader: Any) -> Any:
    if isinstance(dataloader, Mapping):
        return dataloader.get('batch_size')
    return getattr(dataloader, 'batch_size', None)
