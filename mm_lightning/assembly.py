"""Putting a run together from mmengine's runner keywords, in the order mmengine's Runner uses.

The process group is opened first, then the environment, seed and names (so the model
is built from the same random state as under mmengine), then the model and the hooks.
Nothing is written to disk here: ``FlexibleRunner`` opens the run's outputs at once,
a ``ConfigModule`` in someone else's Trainer when that Trainer starts.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Union

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import convert_sync_batchnorm, is_model_wrapper, revert_sync_batchnorm
from mmengine.registry import MODELS
from torch import nn

from .config import ConfigError, private_copy, require_together
from .context import create_context, setup_environment
from .hooks import HookList, is_lightning_callback, merged_default_hooks
from .registry import build, config_key
from .strategies import init_process_group, resolve_launcher

#: Constructor keywords ``from_cfg`` reads from a config, with their defaults (mmengine's).
CONFIG_KEYWORDS: Dict[str, Any] = dict(
    work_dir='work_dirs', experiment_name=None, train_dataloader=None, optim_wrapper=None, param_scheduler=None,
    train_cfg=None, val_dataloader=None, val_evaluator=None, val_cfg=None, test_dataloader=None,
    test_evaluator=None, test_cfg=None, strategy=None, auto_scale_lr=None, default_hooks=None, custom_hooks=None,
    data_preprocessor=None, load_from=None, resume=False, launcher=None, env_cfg=None, log_processor=None,
    log_level='INFO', visualizer=None, default_scope='mmengine', randomness=dict(seed=None), compile=False)


def config_keywords(cfg: Config) -> Dict[str, Any]:
    """The runner keywords a config gives (mmengine's defaults for the missing ones), ``model`` included."""
    if 'model' not in cfg:
        raise ConfigError('model: the config has no `model` entry')
    keywords = {key: cfg.get(key, default) for key, default in CONFIG_KEYWORDS.items()}
    keywords['model'] = cfg['model']
    return keywords


def check_keywords(*, train_dataloader: Any, train_cfg: Any, optim_wrapper: Any, param_scheduler: Any,
                   val_dataloader: Any, val_cfg: Any, val_evaluator: Any, test_dataloader: Any, test_cfg: Any,
                   test_evaluator: Any, compile: Any, resume: Any, load_from: Any) -> None:
    """mmengine's constructor checks, with errors that name the keys."""
    require_together(train_dataloader=train_dataloader, train_cfg=train_cfg, optim_wrapper=optim_wrapper)
    require_together(val_dataloader=val_dataloader, val_cfg=val_cfg, val_evaluator=val_evaluator)
    require_together(test_dataloader=test_dataloader, test_cfg=test_cfg, test_evaluator=test_evaluator)
    if param_scheduler is not None and optim_wrapper is None:
        raise ConfigError('param_scheduler: needs optim_wrapper')
    if not isinstance(compile, (bool, dict)):
        raise ConfigError(f'compile: expected a bool or a dict of torch.compile arguments, got {compile!r}')
    if isinstance(resume, str) and load_from is not None:
        raise ConfigError('resume: when resume is a path, load_from must be None')


def build_model(model: Union[nn.Module, Mapping[str, Any]], data_preprocessor: Any, *, distributed: bool,
                sync_bn: Optional[str]) -> nn.Module:
    """mmengine's ``build_model`` (with ``data_preprocessor``) and its SyncBatchNorm handling."""
    if isinstance(model, Mapping):
        model = copy.deepcopy(dict(model))
        if data_preprocessor is not None:
            model.setdefault('data_preprocessor', data_preprocessor)
        model = build(MODELS, model, 'model')
    elif not isinstance(model, nn.Module):
        raise ConfigError(f'model: expected a dict or an nn.Module, got {model!r}')
    elif data_preprocessor is not None:
        raise ConfigError('data_preprocessor: it configures a model built from a config dict; '
                          'this model is already built')
    if is_model_wrapper(model):
        raise ConfigError('model: pass the bare model; Lightning wraps it for the strategy')
    if not distributed:
        return revert_sync_batchnorm(model)
    if sync_bn is not None:
        with config_key('sync_bn'):
            model = convert_sync_batchnorm(model, sync_bn)
    return model


def build_hooks(default_hooks: Optional[Mapping[str, Any]], custom_hooks: Optional[List[Any]]) -> HookList:
    """The run's mmengine hooks; ``custom_hooks`` that are Lightning callbacks go to the Trainer."""
    hooks = HookList()
    for name, hook in merged_default_hooks(default_hooks).items():
        hooks.register(hook, key=f'default_hooks.{name}')
    for index, hook in enumerate(custom_hooks or []):
        if not is_lightning_callback(hook):
            hooks.register(hook, key=f'custom_hooks[{index}]')
    return hooks


def module_parts(
    cfg: Optional[Config] = None,
    *,
    model: Union[nn.Module, Dict, None] = None,
    work_dir: str = 'work_dirs',
    experiment_name: Optional[str] = None,
    train_dataloader: Any = None,
    optim_wrapper: Any = None,
    param_scheduler: Any = None,
    train_cfg: Optional[Dict] = None,
    val_dataloader: Any = None,
    val_evaluator: Any = None,
    val_cfg: Optional[Dict] = None,
    test_dataloader: Any = None,
    test_evaluator: Any = None,
    test_cfg: Optional[Dict] = None,
    strategy: Any = None,
    auto_scale_lr: Optional[Dict] = None,
    default_hooks: Optional[Dict[str, Union[Hook, Dict]]] = None,
    custom_hooks: Optional[List[Union[Hook, Dict]]] = None,
    data_preprocessor: Any = None,
    load_from: Optional[str] = None,
    resume: Union[str, bool] = False,
    launcher: Optional[str] = None,
    env_cfg: Optional[Dict] = None,
    log_processor: Optional[Dict] = None,
    log_level: str = 'INFO',
    visualizer: Any = None,
    default_scope: Optional[str] = 'mmengine',
    randomness: Optional[Dict] = None,
    compile: Union[bool, Dict] = False,
) -> Dict[str, Any]:
    """The keyword arguments of a :class:`~mm_lightning.ConfigModule` for a run.

    Given a config alone, its keys are the keywords; given keywords (``FlexibleRunner``'s),
    ``cfg`` is the config they came from (dumped and saved in checkpoints).
    """
    if model is None:
        if cfg is None:
            raise ConfigError('model: a run needs a model or a config')
        return module_parts(cfg, **config_keywords(cfg))
    cfg = private_copy(cfg)
    check_keywords(train_dataloader=train_dataloader, train_cfg=train_cfg, optim_wrapper=optim_wrapper,
                   param_scheduler=param_scheduler, val_dataloader=val_dataloader, val_cfg=val_cfg,
                   val_evaluator=val_evaluator, test_dataloader=test_dataloader, test_cfg=test_cfg,
                   test_evaluator=test_evaluator, compile=compile, resume=resume, load_from=load_from)
    launcher = resolve_launcher(launcher)
    env_cfg = dict(env_cfg or {})
    setup_environment(env_cfg, distributed=launcher != 'none')
    init_process_group(launcher, env_cfg)
    context = create_context(
        work_dir=work_dir, cfg=cfg, launcher=launcher, env_cfg=env_cfg,
        randomness=dict(randomness if randomness is not None else dict(seed=None)),
        experiment_name=experiment_name, default_scope=default_scope, log_level=log_level,
        log_processor=log_processor, visualizer=visualizer)
    built = build_model(model, data_preprocessor, distributed=context.distributed, sync_bn=cfg.get('sync_bn'))
    return dict(model=built, context=context, hooks=build_hooks(default_hooks, custom_hooks), cfg=cfg,
                train_cfg=train_cfg, optim_wrapper=optim_wrapper, param_scheduler=param_scheduler,
                auto_scale_lr=auto_scale_lr, val_cfg=val_cfg if val_dataloader is not None else None,
                val_evaluator=val_evaluator, test_cfg=test_cfg if test_dataloader is not None else None,
                test_evaluator=test_evaluator, load_from=load_from, resume=resume, compile=compile)
