"""``visualizer.vis_backends`` that have a Lightning logger become that logger.

The visualizer then writes through the same logger object the Trainer uses, so the
scalars mmengine hooks log (``LoggerHook``) and the metrics ``self.log`` records land
in one run. ``LocalVisBackend`` (``vis_data/scalars.json``) and backends without a
Lightning counterpart stay mmengine's own.

Each translation is one :class:`LightningLoggerVisBackend` subclass in
:data:`VIS_BACKEND_LOGGERS`: its ``LOGGER_OPTIONS`` say which mmengine option becomes
which logger argument, its ``BACKEND_OPTIONS`` which ones it applies itself (config,
images, artifacts: as mmengine's backend does). An option with no equivalent is
refused with a :class:`ConfigError` naming the key. A package may add its own entry.

Any other logger of the Trainer (a user's own ``CSVLogger`` in their Trainer) gets ``LoggerHook``'s
training scalars every ``log_every_n_steps`` iterations (:func:`log_training_tag`) and the validation
metrics through ``self.log``.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
from contextlib import contextmanager
from typing import (
    Any,
    ClassVar,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
    cast,
)

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from mmengine.config import Config
from mmengine.utils import scandir
from mmengine.visualization.vis_backend import BaseVisBackend, force_init_env

from mm_lightning.config.loading import ConfigError
from mm_lightning.config.registry import type_name
from mm_lightning.ground.internals import vis_backend_initialized, vis_backends_of

Scalar = Union[int, float, torch.Tensor, np.ndarray, np.number]


class LightningLoggerVisBackend(BaseVisBackend):
    """An mmengine vis backend writing through a Lightning logger.

    Subclasses translate one mmengine backend: ``MMENGINE_NAME``, the options given to
    the logger (``LOGGER_OPTIONS``: mmengine option -> logger argument) and those the
    backend keeps (``BACKEND_OPTIONS``).
    """

    MMENGINE_NAME: ClassVar[str] = ''
    LOGGER_CLASS: ClassVar[Type[Logger]]  # each subclass names its logger
    LOGGER_OPTIONS: ClassVar[Dict[str, str]] = {}
    BACKEND_OPTIONS: ClassVar[Tuple[str, ...]] = ()
    PACKAGE: ClassVar[str] = ''

    def __init__(self, save_dir: str, logger: Logger, **options: Any) -> None:
        super().__init__(save_dir)
        self._logger = logger
        self._options = options

    @classmethod
    def build_logger(cls, save_dir: str, options: Mapping[str, Any], key: str) -> Tuple[Logger, Dict[str, Any]]:
        """The Lightning logger for a backend config's ``options``, and the options the backend keeps."""
        for option in options:
            if option not in cls.LOGGER_OPTIONS and option not in cls.BACKEND_OPTIONS:
                known = sorted([*cls.LOGGER_OPTIONS, *cls.BACKEND_OPTIONS, 'save_dir'])
                raise ConfigError(f'{key}.{option}: {cls.MMENGINE_NAME} has no option {option!r}; '
                                  f'its options are {known}')
        arguments = {cls.LOGGER_OPTIONS[k]: v for k, v in options.items() if k in cls.LOGGER_OPTIONS}
        kept = {k: v for k, v in options.items() if k in cls.BACKEND_OPTIONS}
        try:
            logger = cls.LOGGER_CLASS(**cls.logger_arguments(save_dir, arguments, key))
        except ModuleNotFoundError as err:
            raise ConfigError(f'{key}: {cls.MMENGINE_NAME} writes through Lightning\'s {cls.LOGGER_CLASS.__name__}, '
                              f'which needs the {cls.PACKAGE} package: pip install {cls.PACKAGE}') from err
        return logger, kept

    @classmethod
    def logger_arguments(cls, save_dir: str, arguments: Dict[str, Any], key: str) -> Dict[str, Any]:
        """The logger's keyword arguments: ``arguments`` with mmengine's defaults."""
        return arguments

    #: Scalar names Lightning has just given this backend's logger itself (see :func:`left_to_lightning`).
    left_out: FrozenSet[str] = frozenset()

    @property
    def logger(self) -> Logger:
        return self._logger

    @property
    def experiment(self) -> Any:
        # every Lightning logger of a backend has one; the Logger base class does not declare it
        return getattr(self._logger, 'experiment')

    def _init_env(self) -> None:
        """The Lightning logger sets itself up on first use."""

    def add_config(self, config: Config, **kwargs: Any) -> None:
        """Lightning loggers record hyperparameters; mmengine's config is recorded by subclasses."""

    def add_scalar(self, name: str, value: Scalar, step: int = 0, **kwargs: Any) -> None:
        self.add_scalars({name: value}, step)

    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None,
                    **kwargs: Any) -> None:
        scalars = {k: float(v) for k, v in scalar_dict.items()
                   if isinstance(v, (int, float, torch.Tensor, np.ndarray, np.number)) and k not in self.left_out}
        if scalars:
            self._logger.log_metrics(scalars, step)

    def close(self) -> None:
        self._logger.save()


class TensorboardLoggerVisBackend(LightningLoggerVisBackend):
    """``TensorboardVisBackend`` as Lightning's ``TensorBoardLogger`` (events in ``vis_data``)."""

    MMENGINE_NAME = 'TensorboardVisBackend'
    LOGGER_CLASS = TensorBoardLogger
    PACKAGE = 'tensorboard'

    @classmethod
    def logger_arguments(cls, save_dir: str, arguments: Dict[str, Any], key: str) -> Dict[str, Any]:
        # mmengine writes events straight into <log_dir>/vis_data; so does this logger.
        return dict(save_dir=osp.dirname(save_dir), name=osp.basename(save_dir), version='', default_hp_metric=False)

    def add_config(self, config: Config, **kwargs: Any) -> None:
        self.experiment.add_text('config', config.pretty_text)

    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        self.experiment.add_image(name, image, step, dataformats='HWC')


class WandbLoggerVisBackend(LightningLoggerVisBackend):
    """``WandbVisBackend`` as Lightning's ``WandbLogger``.

    ``init_kwargs`` are ``wandb.init``'s arguments, as under mmengine (``dir`` defaults to
    the backend's ``save_dir``, ``project`` to ``WANDB_PROJECT`` or wandb's own default).
    Every log call commits (``commit=False`` has no equivalent). Like mmengine's backend,
    ``close`` (LoggerHook's ``after_run``) finishes the wandb run.
    """

    MMENGINE_NAME = 'WandbVisBackend'
    LOGGER_CLASS = WandbLogger
    LOGGER_OPTIONS = dict(init_kwargs='init_kwargs')
    BACKEND_OPTIONS = ('define_metric_cfg', 'commit', 'log_code_name', 'watch_kwargs')
    PACKAGE = 'wandb'
    #: ``wandb.init`` arguments that are ``WandbLogger`` arguments of another name.
    INIT_ARGUMENTS: ClassVar[Dict[str, str]] = {'dir': 'save_dir'}

    @classmethod
    def build_logger(cls, save_dir: str, options: Mapping[str, Any], key: str) -> Tuple[Logger, Dict[str, Any]]:
        if options.get('commit', True) is not True:
            raise ConfigError(f'{key}.commit: expected True (Lightning\'s WandbLogger commits every log call), '
                              f'got {options["commit"]!r}')
        define_metric_cfg = options.get('define_metric_cfg')
        if define_metric_cfg is not None and not isinstance(define_metric_cfg, (Mapping, list, tuple)):
            raise ConfigError(f'{key}.define_metric_cfg: expected a dict (metric -> summary) or a list of '
                              f'define_metric arguments, got {define_metric_cfg!r}')
        logger, kept = super().build_logger(save_dir, options, key)
        kept['allow_val_change'] = bool((options.get('init_kwargs') or {}).get('allow_val_change', False))
        return logger, kept

    @classmethod
    def logger_arguments(cls, save_dir: str, arguments: Dict[str, Any], key: str) -> Dict[str, Any]:
        init_kwargs = dict(arguments.get('init_kwargs') or {})
        anonymous = init_kwargs.pop('anonymous', None)
        if anonymous not in (None, 'never', 'allow'):
            raise ConfigError(f"{key}.init_kwargs.anonymous: expected 'allow' or 'never' (WandbLogger offers "
                              f'no other mode), got {anonymous!r}')
        init_kwargs.setdefault('dir', save_dir)
        init_kwargs.setdefault('project', os.environ.get('WANDB_PROJECT') or 'uncategorized')
        renamed: Dict[str, Any] = {cls.INIT_ARGUMENTS[k] if k in cls.INIT_ARGUMENTS else k: v
                                   for k, v in init_kwargs.items()}
        return dict(renamed, anonymous=anonymous == 'allow' or None)

    def _init_env(self) -> None:
        if self._options.get('define_metric_cfg') is None:
            return
        metrics = self._options['define_metric_cfg']
        if isinstance(metrics, Mapping):
            for metric, summary in metrics.items():
                self.experiment.define_metric(metric, summary=summary)
        else:
            for metric_cfg in metrics:
                self.experiment.define_metric(**metric_cfg)

    @force_init_env
    def add_config(self, config: Config, **kwargs: Any) -> None:
        self.experiment.config.update(config.to_dict(), allow_val_change=self._options['allow_val_change'])
        self.experiment.log_code(name=self._options.get('log_code_name'))

    @force_init_env
    def add_graph(self, model: torch.nn.Module, data_batch: Sequence[dict], **kwargs: Any) -> None:
        self.experiment.watch(model, **(self._options.get('watch_kwargs') or {}))

    @force_init_env
    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        cast(WandbLogger, self._logger).log_image(key=name, images=[image], step=step)

    def close(self) -> None:
        if vis_backend_initialized(self):
            self.experiment.finish()


class MLflowLoggerVisBackend(LightningLoggerVisBackend):
    """``MLflowVisBackend`` as Lightning's ``MLFlowLogger``.

    As under mmengine: the tracking URI defaults to ``file://<save_dir>``, the experiment
    name to ``'Default'``; ``params`` are logged at start, the config (or its
    ``tracked_config_keys``) as params plus ``config.py``, and on ``close`` the work_dir's
    files ending in ``artifact_suffix`` become artifacts and the run ends.
    """

    MMENGINE_NAME = 'MLflowVisBackend'
    LOGGER_CLASS = MLFlowLogger
    LOGGER_OPTIONS = dict(exp_name='experiment_name', run_name='run_name', tags='tags',
                          tracking_uri='tracking_uri', artifact_location='artifact_location')
    BACKEND_OPTIONS = ('params', 'artifact_suffix', 'tracked_config_keys')
    PACKAGE = 'mlflow'
    DEFAULT_ARTIFACT_SUFFIX = ('.json', '.log', '.py', 'yaml')

    @classmethod
    def logger_arguments(cls, save_dir: str, arguments: Dict[str, Any], key: str) -> Dict[str, Any]:
        arguments = dict(arguments)
        if arguments.get('tracking_uri') is None:
            arguments['tracking_uri'] = f'file://{osp.abspath(save_dir)}'
        if arguments.get('experiment_name') is None:
            arguments['experiment_name'] = 'Default'
        if arguments.get('tags') is not None:
            arguments['tags'] = dict(arguments['tags'])
        return arguments

    def __init__(self, save_dir: str, logger: Logger, **options: Any) -> None:
        super().__init__(save_dir, logger, **options)
        self._work_dir: Optional[str] = None

    def _init_env(self) -> None:
        if self._options.get('params'):
            self._log_params(dict(self._options['params']))

    @force_init_env
    def add_config(self, config: Config, **kwargs: Any) -> None:
        self._work_dir = config.get('work_dir')
        tracked = self._options.get('tracked_config_keys')
        cfg = config.to_dict()
        self._log_params(_flatten(cfg if tracked is None else {key: cfg[key] for key in tracked}))
        self.experiment.log_text(self._run_id, config.pretty_text, 'config.py')

    @force_init_env
    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        self.experiment.log_image(self._run_id, image, name)

    def close(self) -> None:
        if not vis_backend_initialized(self):
            return
        if self._work_dir is not None:
            suffix = self._options.get('artifact_suffix', self.DEFAULT_ARTIFACT_SUFFIX)
            # listed first: logging writes new files under work_dir when the store lives there
            files = [osp.join(self._work_dir, name) for name in scandir(self._work_dir, suffix, True)]
            for path in files:
                self.experiment.log_artifact(self._run_id, path, osp.dirname(osp.relpath(path, self._work_dir)))
        self._logger.finalize('success')

    @property
    def _run_id(self) -> Optional[str]:
        return cast(MLFlowLogger, self._logger).run_id

    def _log_params(self, params: Dict[str, Any]) -> None:
        from mlflow.entities import Param
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            self.experiment.log_batch(self._run_id, params=items[start:start + 100])


def _flatten(cfg: Mapping[str, Any], parent: str = '') -> Dict[str, Any]:
    """mmengine's MLflow parameter names: ``a.b.0.c`` for nested dicts and lists of dicts."""
    items: Dict[str, Any] = {}
    for key, value in cfg.items():
        name = f'{parent}.{key}' if parent else str(key)
        if isinstance(value, Mapping):
            items.update(_flatten(value, name))
        elif isinstance(value, list) and any(isinstance(x, Mapping) for x in value):
            for index, item in enumerate(value):
                items.update(_flatten(item, f'{name}.{index}') if isinstance(item, Mapping)
                             else {f'{name}.{index}': item})
        else:
            items[name] = value
    return items


#: mmengine vis backend type -> the backend that writes through a Lightning logger instead.
VIS_BACKEND_LOGGERS: Dict[str, Type[LightningLoggerVisBackend]] = {
    backend.MMENGINE_NAME: backend
    for backend in (TensorboardLoggerVisBackend, WandbLoggerVisBackend, MLflowLoggerVisBackend)
}


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
        translation = VIS_BACKEND_LOGGERS[name]
        options = {k: v for k, v in backend.items() if k not in ('type', 'name', 'save_dir')}
        logger, kept = translation.build_logger(backend.get('save_dir') or backend_dir, options,
                                                f'visualizer.vis_backends[{index}]')
        loggers.append(logger)
        routed.append(dict(type=translation, name=backend.get('name', name), logger=logger, **kept))
    visualizer['vis_backends'] = routed
    return visualizer, loggers


@contextmanager
def left_to_lightning(visualizer: Any, names: Iterable[str]) -> Iterator[None]:
    """While an evaluation's ``after_*_epoch`` hooks run, the backends that write through a Lightning logger
    leave out ``names``: the evaluation's metrics, which ``self.log_dict`` has already given every logger of
    the Trainer (theirs among them), so ``LoggerHook`` does not write them there a second time."""
    backends = [backend for backend in vis_backends_of(visualizer) if isinstance(backend, LightningLoggerVisBackend)]
    for backend in backends:
        backend.left_out = frozenset(names)
    try:
        yield
    finally:
        for backend in backends:
            backend.left_out = frozenset()


def log_training_tag(trainer: pl.Trainer, runner: Any, batch_idx: int, vis_loggers: Sequence[Logger]) -> None:
    """Give the Trainer's other loggers (a user's ``CSVLogger``...) mmengine's training scalars, every
    ``log_every_n_steps`` iterations, as ``LoggerHook`` gives them to the visualizer.

    The scalars are mmengine's: the tag ``runner.log_processor`` computes for ``LoggerHook`` (losses, ``lr``,
    ``time``, ``data_time``... smoothed over its window), at ``LoggerHook``'s step (``runner.iter + 1``); called
    where ``after_train_iter`` runs. The loggers ``vis_backends`` became (``vis_loggers``) are left out: the
    visualizer already writes ``LoggerHook``'s scalars through them.
    """
    if not trainer.loggers:  # the common case, every iteration: nothing to give, nothing else to look up
        return
    every = getattr(trainer, 'log_every_n_steps')  # the Trainer's argument, set in its __init__, not declared
    loggers = [logger for logger in trainer.loggers if not any(logger is own for own in vis_loggers)]
    if not loggers or every <= 0 or (runner.iter + 1) % every:
        return
    tag, _ = runner.log_processor.get_log_after_iter(runner, batch_idx, 'train')
    scalars = {key: float(value) for key, value in tag.items()
               if isinstance(value, (int, float, torch.Tensor, np.ndarray, np.number))}
    for logger in loggers:
        logger.log_metrics(scalars, step=runner.iter + 1)
        logger.save()


__all__: Sequence[str] = ['LightningLoggerVisBackend', 'TensorboardLoggerVisBackend', 'WandbLoggerVisBackend',
                          'MLflowLoggerVisBackend', 'route_vis_backends', 'left_to_lightning', 'log_training_tag',
                          'VIS_BACKEND_LOGGERS']
