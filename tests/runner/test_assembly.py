"""A run put together from mmengine's runner keywords: checks, model building, hooks."""
import pytest
import torch

from mm_lightning import ConfigError
from mm_lightning.runner.assembly import (
    build_hooks,
    build_model,
    check_keywords,
    config_keywords,
    module_parts,
)


def _keywords(**changes):
    keywords = dict(train_dataloader=None, train_cfg=None, optim_wrapper=None, param_scheduler=None,
                    val_dataloader=None, val_cfg=None, val_evaluator=None, test_dataloader=None, test_cfg=None,
                    test_evaluator=None, compile=False, resume=False, load_from=None)
    keywords.update(changes)
    return keywords


def test_mmengines_constructor_checks_name_the_keys():
    with pytest.raises(ConfigError, match='train_dataloader, train_cfg, optim_wrapper should be either all None'):
        check_keywords(**_keywords(train_cfg=dict(by_epoch=True, max_epochs=1)))
    with pytest.raises(ConfigError, match='param_scheduler: param_scheduler should be None when optim_wrapper is None'):
        check_keywords(**_keywords(param_scheduler=dict(type='ConstantLR')))
    with pytest.raises(ConfigError, match='resume: when resume is a path, load_from must be None'):
        check_keywords(**_keywords(resume='a.pth', load_from='b.pth'))
    with pytest.raises(ConfigError, match='compile: expected a bool or a dict'):
        check_keywords(**_keywords(compile='yes'))


def test_models_are_built_or_refused_as_mmengine_would():
    assert type(build_model(dict(type='ToyClassifier'), None, distributed=False, sync_bn=None)).__name__ == \
        'ToyClassifier'
    built = build_model(dict(type='ToyClassifier'), None, distributed=False, sync_bn=None)
    with pytest.raises(ConfigError, match='data_preprocessor: it configures a model built from a config dict'):
        build_model(built, dict(type='BaseDataPreprocessor'), distributed=False, sync_bn=None)
    bn = torch.nn.Sequential(torch.nn.SyncBatchNorm(2))
    reverted = build_model(bn, None, distributed=False, sync_bn=None)[0]  # single process: no SyncBatchNorm
    assert not isinstance(reverted, torch.nn.SyncBatchNorm)


def test_config_keywords_and_hooks():
    with pytest.raises(ConfigError, match='model: the config has no `model` entry'):
        config_keywords({})
    hooks = build_hooks(dict(checkpoint=None), [dict(type='lightning.pytorch.callbacks.LearningRateMonitor')])
    assert 'CheckpointHook' not in [type(h).__name__ for h in hooks.hooks]  # removed; the callback goes elsewhere
    with pytest.raises(TypeError, match=r"unexpected runner keywords \['modle'\]"):
        module_parts(None, modle=dict(type='ToyClassifier'))
