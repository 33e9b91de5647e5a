"""Putting a run together from mmengine's runner keywords, in the order mmengine's Runner uses.

What this machine cannot run (the strategy's run-time refusals, as ``explain`` lists them)
is refused first, before anything is built. The process group is opened next, then the
environment, seed and names (so the model is built from the same random state as under
mmengine), then the model and the hooks.
Nothing is written to disk here: ``FlexibleRunner`` opens the run's outputs at once,
a ``ConfigModule`` in someone else's Trainer when that Trainer starts.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

from mmengine.config import Config
from mmengine.model import convert_sync_batchnorm, is_model_wrapper, revert_sync_batchnorm
from mmengine.registry import MODELS
from torch import nn

from mm_lightning.config.loading import (
    ConfigError,
    config_error,
    default_work_dir,
    private_copy,
    require_together,
)
from mm_lightning.config.registry import build, config_key
from mm_lightning.config.validation import validate_config
from mm_lightning.ground.internals import ParamScheduler
from mm_lightning.runtime.context import RunContext, create_context, setup_environment
from mm_lightning.runtime.hooks import HookList, is_lightning_callback, merged_default_hooks
from mm_lightning.translate.launchers import (
    config_layout,
    init_process_group,
    require_launcher_variables,
    resolve_launcher,
)
from mm_lightning.translate.strategies import check_run_time

__all__ = ['CONFIG_KEYWORDS', 'STAGE_GROUPS', 'require_model', 'check_stage_groups', 'config_keywords',
           'check_keywords', 'check_scheduler_shape', 'build_model', 'build_hooks', 'ModuleParts', 'module_parts']

#: Constructor keywords ``from_cfg`` reads from a config, with their defaults (mmengine's).
CONFIG_KEYWORDS: Dict[str, Any] = dict(
    work_dir='work_dirs', experiment_name=None, train_dataloader=None, optim_wrapper=None, param_scheduler=None,
    train_cfg=None, val_dataloader=None, val_evaluator=None, val_cfg=None, test_dataloader=None,
    test_evaluator=None, test_cfg=None, strategy=None, auto_scale_lr=None, default_hooks=None, custom_hooks=None,
    data_preprocessor=None, load_from=None, resume=False, launcher=None, env_cfg=None, log_processor=None,
    log_level='INFO', visualizer=None, default_scope='mmengine', randomness=dict(seed=None), compile=False)


#: Each stage's three keys, which mmengine's Runner takes all or none of.
STAGE_GROUPS = (('train_dataloader', 'train_cfg', 'optim_wrapper'), ('val_dataloader', 'val_cfg', 'val_evaluator'),
                ('test_dataloader', 'test_cfg', 'test_evaluator'))


def require_model(cfg: Mapping[str, Any]) -> None:
    """A run needs ``model`` (mmengine's Runner reads ``cfg['model']``)."""
    if 'model' not in cfg:
        raise config_error('model: the config has no `model` entry', KeyError)


def check_stage_groups(keywords: Mapping[str, Any]) -> None:
    """mmengine's all-or-none rule for each stage's three keys (:data:`STAGE_GROUPS`)."""
    for group in STAGE_GROUPS:
        require_together(**{key: keywords.get(key) for key in group})


def config_keywords(cfg: Config) -> Dict[str, Any]:
    """The runner keywords a config gives (mmengine's defaults for the missing ones), ``model`` included."""
    require_model(cfg)
    keywords = {key: cfg.get(key, default) for key, default in CONFIG_KEYWORDS.items()}
    keywords['work_dir'] = cfg.get('work_dir') or default_work_dir(cfg)
    keywords['model'] = cfg['model']
    return keywords


def check_keywords(*, train_dataloader: Any, train_cfg: Any, optim_wrapper: Any, param_scheduler: Any,
                   val_dataloader: Any, val_cfg: Any, val_evaluator: Any, test_dataloader: Any, test_cfg: Any,
                   test_evaluator: Any, compile: Any, resume: Any, load_from: Any) -> None:
    """mmengine's constructor checks, with errors that name the keys."""
    check_stage_groups(locals())
    if param_scheduler is not None and optim_wrapper is None:
        raise ConfigError('param_scheduler: param_scheduler should be None when optim_wrapper is None')
    check_scheduler_shape(param_scheduler)
    if not isinstance(compile, (bool, dict)):
        raise ConfigError(f'compile: expected a bool or a dict of torch.compile arguments, got {compile!r}')
    if isinstance(resume, str) and load_from is not None:
        raise ConfigError('resume: when resume is a path, load_from must be None')


def check_scheduler_shape(param_scheduler: Any) -> None:
    """mmengine's ``_check_scheduler_cfg``: one optimizer's schedulers, or a dict of them per optimizer."""
    if param_scheduler is None or isinstance(param_scheduler, ParamScheduler):
        return
    if isinstance(param_scheduler, (list, tuple)):
        for index, item in enumerate(param_scheduler):
            if isinstance(item, Mapping) and 'type' not in item:
                raise config_error(f'param_scheduler[{index}]: each parameter scheduler should contain the key '
                                   f'type, but got {item!r}', AssertionError)
    elif isinstance(param_scheduler, Mapping):
        if 'type' not in param_scheduler:
            for name, item in param_scheduler.items():
                if not isinstance(item, (Mapping, list, tuple, ParamScheduler)):
                    raise config_error(f'param_scheduler.{name}: Each value of `param_scheduler` should be a dict '
                                       f'or a list, but got {item!r}', AssertionError)
    else:
        raise config_error('param_scheduler: `param_scheduler` should be a `_ParamScheduler`, `dict`, list or a '
                           f'tuple, but got {type(param_scheduler).__name__}', TypeError)


def build_model(model: Union[nn.Module, Mapping[str, Any]], data_preprocessor: Any, *, distributed: bool,
                sync_bn: Optional[str]) -> nn.Module:
    """mmengine's ``build_model`` (with ``data_preprocessor``) and its SyncBatchNorm handling."""
    built: nn.Module
    if isinstance(model, Mapping):
        model_cfg = copy.deepcopy(dict(model))
        if data_preprocessor is not None:
            model_cfg.setdefault('data_preprocessor', data_preprocessor)
        built = build(MODELS, model_cfg, 'model')
    elif not isinstance(model, nn.Module):
        raise config_error(f'model: model should be a nn.Module object or dict, but got {model!r}', TypeError)
    elif data_preprocessor is not None:
        raise ConfigError('data_preprocessor: it configures a model built from a config dict; '
                          'this model is already built')
    else:
        built = model
    if is_model_wrapper(built):
        raise ConfigError('model: pass the bare model; Lightning wraps it for the strategy')
    if not distributed:
        return revert_sync_batchnorm(built)
    if sync_bn is not None:
        with config_key('sync_bn'):
            built = convert_sync_batchnorm(built, sync_bn)
    return built


def build_hooks(default_hooks: Optional[Mapping[str, Any]], custom_hooks: Optional[List[Any]]) -> HookList:
    """The run's mmengine hooks; ``custom_hooks`` that are Lightning callbacks go to the Trainer."""
    hooks = HookList()
    for name, hook in merged_default_hooks(default_hooks).items():
        hooks.register(hook, key=f'default_hooks.{name}')
    for index, hook in enumerate(custom_hooks or []):
        if not is_lightning_callback(hook, f'custom_hooks[{index}]'):
            hooks.register(hook, key=f'custom_hooks[{index}]')
    return hooks


@dataclass
class ModuleParts:
    """What a :class:`~mm_lightning.ConfigModule` is made of: built parts and the configs built later.

    The model, context and hooks are built when the run is put together (mmengine's Runner
    builds them in its constructor); loops, optimizers, schedulers and evaluators stay configs
    until the stage that needs them starts.
    """

    model: nn.Module
    context: RunContext
    hooks: HookList
    cfg: Config  # the config the run came from (dumped, and saved in checkpoints)
    keywords: Mapping[str, Any]  # the run's runner keywords, which each stage checks when it starts
    train_cfg: Any = None
    optim_wrapper: Any = None
    param_scheduler: Any = None
    auto_scale_lr: Optional[dict] = None
    val_cfg: Any = None
    val_evaluator: Any = None
    test_cfg: Any = None
    test_evaluator: Any = None
    load_from: Optional[str] = None
    resume: Union[bool, str] = False
    compile: Union[bool, Dict[str, Any]] = False


def module_parts(cfg: Optional[Config] = None, **keywords: Any) -> ModuleParts:
    """The parts of a :class:`~mm_lightning.ConfigModule` for a run.

    ``keywords`` are ``FlexibleRunner``'s (mmengine's defaults for the missing ones) and
    ``cfg`` the config they came from (dumped and saved in checkpoints); given a config
    alone, its keys are the keywords.
    """
    if not keywords:
        if cfg is None:
            raise ConfigError('model: a run needs a model or a config')
        keywords = config_keywords(cfg)
    unknown = set(keywords) - set(CONFIG_KEYWORDS) - {'model'}
    if unknown:
        raise TypeError(f'unexpected runner keywords {sorted(unknown)}')
    run = dict(CONFIG_KEYWORDS, **keywords)
    cfg = private_copy(cfg)
    keywords = {**dict(cfg.items()), **run}
    validate_config(keywords, stages=('run',))  # each stage's own keys when it starts (ConfigModule.check_stage)
    check_keywords(**{key: run[key] for key in (
        'train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler', 'val_dataloader', 'val_cfg',
        'val_evaluator', 'test_dataloader', 'test_cfg', 'test_evaluator', 'compile', 'resume', 'load_from')})
    launcher = resolve_launcher(run['launcher'])
    require_launcher_variables(launcher)
    check_run_time(keywords, config_layout(keywords, launcher))  # what this machine cannot run, before it is built
    env_cfg = dict(run['env_cfg'] or {})
    setup_environment(env_cfg, distributed=launcher != 'none')
    init_process_group(launcher, env_cfg)
    context = create_context(
        work_dir=run['work_dir'], cfg=cfg, launcher=launcher, env_cfg=env_cfg,
        randomness=dict(run['randomness'] if run['randomness'] is not None else dict(seed=None)),
        experiment_name=run['experiment_name'], default_scope=run['default_scope'], log_level=run['log_level'],
        log_processor=run['log_processor'], visualizer=run['visualizer'])
    model = build_model(run['model'], run['data_preprocessor'], distributed=context.distributed,
                        sync_bn=cfg.get('sync_bn'))
    return ModuleParts(
        model=model, context=context, hooks=build_hooks(run['default_hooks'], run['custom_hooks']), cfg=cfg,
        keywords=keywords, train_cfg=run['train_cfg'], optim_wrapper=run['optim_wrapper'],
        param_scheduler=run['param_scheduler'], auto_scale_lr=run['auto_scale_lr'],
        val_cfg=run['val_cfg'] if run['val_dataloader'] is not None else None, val_evaluator=run['val_evaluator'],
        test_cfg=run['test_cfg'] if run['test_dataloader'] is not None else None,
        test_evaluator=run['test_evaluator'], load_from=run['load_from'], resume=run['resume'],
        compile=run['compile'])
