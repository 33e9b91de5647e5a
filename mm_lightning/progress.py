"""Lightning's progress bars for an mmengine run, by choice (``progress_bar`` / ``--progress-bar``).

mmengine runs report progress in ``LoggerHook``'s log lines; a bar is optional. While a bar
draws, the INFO lines go to the log file only (warnings and errors still reach the console),
and the bar shows mmengine's latest training losses and LR.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Tuple, Type

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from mmengine.logging import MessageHub, MMLogger
from typing_extensions import override

from .config import ConfigError


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


def build_progress_bar(name: Optional[str]) -> Optional[ProgressBar]:
    """The Lightning progress bar callback ``progress_bar`` names (``None``/``'none'``: no bar)."""
    bar = PROGRESS_BARS[name or 'none']
    if bar is None:
        return None
    try:
        return bar()
    except ModuleNotFoundError as err:
        raise ConfigError(f'progress_bar: {name!r} needs a package that is not installed ({err})') from err
