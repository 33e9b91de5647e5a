"""``visualizer.vis_backends`` that have a Lightning logger become that logger.

The visualizer then writes through the same logger object the Trainer uses, so the
scalars mmengine hooks log (``LoggerHook``) and the metrics ``self.log`` records reach
the same place. ``LocalVisBackend`` (``vis_data/scalars.json``) and backends without a
Lightning counterpart stay mmengine's own.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from mmengine.config import Config
from mmengine.visualization.vis_backend import BaseVisBackend

from .config import ConfigError
from .registry import type_name


def _tensorboard(save_dir: str, options: Dict[str, Any], key: str) -> Logger:
    if options:
        raise ConfigError(f'{key}: TensorboardVisBackend takes only save_dir, got {sorted(options)}')
    # mmengine writes events straight into <log_dir>/vis_data; so does this logger.
    return TensorBoardLogger(save_dir=osp.dirname(save_dir), name=osp.basename(save_dir), version='',
                             default_hp_metric=False)


#: mmengine vis backend type -> builder of the Lightning logger that replaces it.
VIS_BACKEND_LOGGERS: Dict[str, Callable[[str, Dict[str, Any], str], Logger]] = {
    'TensorboardVisBackend': _tensorboard,
}


class LightningLoggerVisBackend(BaseVisBackend):
    """An mmengine vis backend writing through a Lightning logger."""

    def __init__(self, save_dir: str, logger: Logger) -> None:
        super().__init__(save_dir)
        self._logger = logger

    @property
    def experiment(self) -> Any:
        return self._logger.experiment

    def _init_env(self) -> None:
        """The Lightning logger sets itself up on first use."""

    def add_config(self, config: Config, **kwargs: Any) -> None:
        if hasattr(self.experiment, 'add_text'):
            self.experiment.add_text('config', config.pretty_text)

    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        if hasattr(self.experiment, 'add_image'):
            self.experiment.add_image(name, image, step, dataformats='HWC')

    def add_scalar(self, name: str, value: Union[int, float, torch.Tensor, np.ndarray, np.number],
                   step: int = 0, **kwargs: Any) -> None:
        self._logger.log_metrics({name: float(value)}, step)

    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None,
                    **kwargs: Any) -> None:
        scalars = {k: float(v) for k, v in scalar_dict.items()
                   if isinstance(v, (int, float, torch.Tensor, np.ndarray, np.number))}
        if scalars:
            self._logger.log_metrics(scalars, step)

    def close(self) -> None:
        self._logger.save()


def route_vis_backends(visualizer: Any, save_dir: str) -> Tuple[Any, List[Logger]]:
    """The visualizer config with Lightning-backed backends, and the loggers for the Trainer.

    ``save_dir`` is the visualizer's (the run's log_dir); backends write under ``vis_data``.
    """
    if not isinstance(visualizer, Mapping) or not visualizer.get('vis_backends'):
        return visualizer, []
    visualizer = copy.deepcopy(dict(visualizer))
    backends = visualizer['vis_backends']
    backends = [backends] if isinstance(backends, Mapping) else list(backends)
    loggers: List[Logger] = []
    routed: List[Any] = []
    backend_dir = osp.join(visualizer.get('save_dir') or save_dir, 'vis_data')
    for index, backend in enumerate(backends):
        name = type_name(backend.get('type')) if isinstance(backend, Mapping) else None
        if name not in VIS_BACKEND_LOGGERS:
            routed.append(backend)
            continue
        options = {k: v for k, v in backend.items() if k not in ('type', 'name', 'save_dir')}
        logger = VIS_BACKEND_LOGGERS[name](backend.get('save_dir') or backend_dir, options,
                                           f'visualizer.vis_backends[{index}]')
        loggers.append(logger)
        routed.append(dict(type=LightningLoggerVisBackend, name=backend.get('name', name), logger=logger))
    visualizer['vis_backends'] = routed
    return visualizer, loggers



__all__: Sequence[str] = ['LightningLoggerVisBackend', 'route_vis_backends', 'VIS_BACKEND_LOGGERS']
