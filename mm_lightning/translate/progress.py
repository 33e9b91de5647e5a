"""Lightning's progress bars for an mmengine run, by choice (``progress_bar`` / ``--progress-bar``).

mmengine runs report progress in ``LoggerHook``'s log lines; a bar is optional. While a bar
draws, the INFO lines go to the log file only (warnings and errors still reach the console),
and the bar shows mmengine's latest training losses and LR. The same holds for any Lightning bar
in a user's own Trainer (Lightning's default ``TQDMProgressBar``): the hook bridge sends the INFO
lines to the log file while it draws (:func:`bar_draws`).
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from mmengine.logging import MessageHub, MMLogger
from typing_extensions import override

from mm_lightning.config.loading import ConfigError

__all__ = ['quiet_console', 'restore_console', 'file_only', 'LIGHTNING_INFO_LOGGERS', 'lightning_info_to_file',
           'bar_draws', 'quiets_itself', 'draws', 'ConsoleProgress', 'TQDMConsoleProgress', 'RichConsoleProgress',
           'PROGRESS_BARS', 'build_progress_bar']


def quiet_console(logger: logging.Logger) -> List[Tuple[logging.Handler, int]]:
    """Send ``logger``'s INFO lines to its log file only: its console handlers show warnings and errors.
    Returns what :func:`restore_console` puts back."""
    quieted: List[Tuple[logging.Handler, int]] = []
    for handler in logger.handlers:
        if type(handler) is logging.StreamHandler and handler.level < logging.WARNING:  # not a FileHandler
            quieted.append((handler, handler.level))
            handler.setLevel(logging.WARNING)
    return quieted


def restore_console(quieted: List[Tuple[logging.Handler, int]]) -> None:
    for handler, level in quieted:
        handler.setLevel(level)


@contextmanager
def file_only(logger: logging.Logger, when: bool = True) -> Iterator[None]:
    """While the block runs, ``logger``'s INFO lines go to its log file only (``when`` a bar will draw)."""
    quieted = quiet_console(logger) if when else []
    try:
        yield
    finally:
        restore_console(quieted)


#: Lightning's loggers of the lines it prints when a Trainer is built (``GPU available: ...``, the litlogger tip).
LIGHTNING_INFO_LOGGERS = ('lightning.pytorch.utilities.rank_zero', 'lightning.fabric.utilities.rank_zero')


class _ToLogFile(logging.Filter):
    """Hands a Lightning logger's INFO lines to ``log_to_file`` instead of the console; passes warnings on."""

    def __init__(self, log_to_file: Callable[[str], None]) -> None:
        super().__init__()
        self._log_to_file = log_to_file

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        self._log_to_file(record.getMessage())
        return False


@contextmanager
def lightning_info_to_file(log_to_file: Callable[[str], None]) -> Iterator[None]:
    """While the block builds the Trainer of one of our entry points (FlexibleRunner, ConfigCLI), Lightning's INFO
    lines go to the run's log file (``log_to_file``): the console shows mmengine's lines, as under mmengine. A
    user's own ``Trainer(...)`` prints them: that is their Lightning."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    divert = _ToLogFile(log_to_file)
    for logger in loggers:
        logger.addFilter(divert)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(divert)


def bar_draws(trainer: pl.Trainer) -> bool:
    """Whether a Lightning progress bar draws while ``trainer`` runs (Lightning's default ``TQDMProgressBar``
    unless ``enable_progress_bar=False``, or one the user gives)."""
    bar = trainer.progress_bar_callback
    return bar is not None and bool(getattr(bar, 'is_enabled', True))  # Lightning's bars say; others draw


def quiets_itself(trainer: pl.Trainer) -> bool:
    """Whether the Trainer's bar is one of ours (:class:`ConsoleProgress`): it sends mmengine's INFO lines to
    the log file itself, and prints its closing line once the console is back."""
    return isinstance(trainer.progress_bar_callback, ConsoleProgress)


def draws(progress_bar: Optional[str]) -> bool:
    """Whether the config's ``progress_bar`` draws a bar (then the environment and config dumps skip the console)."""
    return PROGRESS_BARS.get(progress_bar or 'none') is not None


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
        self._quieted = quiet_console(MMLogger.get_current_instance())

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        restore_console(self._quieted)
        self._quieted = []
        self._closing_line(pl_module, stage)

    @staticmethod
    def _closing_line(pl_module: pl.LightningModule, stage: str) -> None:
        """Where the run's files are and its last metrics, once the bar has gone."""
        context = getattr(pl_module, 'context', None)
        if context is None:
            return
        metrics = (getattr(pl_module, 'metrics', None) or {}).get('test' if stage == 'test' else 'val') or {}
        shown = ', '.join(f'{key}: {_number(value)}' for key, value in metrics.items())
        MMLogger.get_current_instance().info(f'Done ({getattr(stage, "value", stage)}): files in {context.work_dir}'
                                             + (f'; last {"test" if stage == "test" else "validation"}: {shown}'
                                                if shown else ''))

    @override
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        for key, history in MessageHub.get_current_instance().log_scalars.items():
            shown = self.SHOWN.match(key)
            if shown:
                metrics[shown.group(1)] = float(history.current())
        validation = (getattr(pl_module, 'metrics', None) or {}).get('val') or {}
        metrics.update((key, value) for key, value in validation.items() if isinstance(value, (int, float)))
        return metrics

    @staticmethod
    def description(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """mmengine's count: ``Epoch 1/4`` for the first of four epochs (Lightning counts from 0), or
        ``Iterations`` for an iteration-based run (one Lightning epoch)."""
        progress = getattr(pl_module, 'progress', None)
        if progress is not None and not progress.by_epoch:
            return 'Iterations'
        return f'Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}'


def _number(value: Any) -> Any:
    return f'{value:.4g}' if isinstance(value, float) else value


class TQDMConsoleProgress(ConsoleProgress, TQDMProgressBar):
    """Lightning's tqdm bar for an mmengine run."""

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.set_description(self.description(trainer, pl_module))


class RichConsoleProgress(ConsoleProgress, RichProgressBar):
    """Lightning's rich bar for an mmengine run (needs the ``rich`` package)."""

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, description=self.description(trainer, pl_module))


#: ``progress_bar`` config values (``--progress-bar`` on the command line) -> the progress bar.
PROGRESS_BARS: Dict[str, Optional[Type[ProgressBar]]] = dict(
    none=None,
    tqdm=TQDMConsoleProgress,
    rich=RichConsoleProgress,
)


def build_progress_bar(name: Optional[str]) -> Optional[ProgressBar]:
    """The Lightning progress bar callback ``progress_bar`` names (``None``/``'none'``: no bar)."""
    bar = PROGRESS_BARS[name or 'none']
    if bar is None:
        return None
    try:
        return bar()
    except ModuleNotFoundError as err:
        raise ConfigError(f'progress_bar: {name!r} needs a package that is not installed ({err})') from err
