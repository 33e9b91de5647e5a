"""A run put together from mmengine's runner keywords: checks, model building, hooks."""
import os
import sys

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from torch.utils.data import Dataset

from mm_lightning import ConfigError, ConfigModule, FlexibleRunner
from mm_lightning.runtime.assembly import (
    build_hooks,
    build_model,
    check_keywords,
    config_keywords,
    module_parts,
)
from mm_lightning.tools.explain import explain


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


@MODELS.register_module(force=True)
class ModelNotToBuild(BaseModel):
    def __init__(self, **kwargs):
        raise AssertionError('the model was built')

    def forward(self, *args, **kwargs):
        raise NotImplementedError


@DATASETS.register_module(force=True)
class DatasetNotToBuild(Dataset):
    def __init__(self, **kwargs):
        raise AssertionError('the dataset was built')


#: torchrun's variables for a world of one process: without the early check, the run would open its group.
ONE_PROCESS_TORCHRUN = dict(WORLD_SIZE='1', LOCAL_WORLD_SIZE='1', RANK='0', LOCAL_RANK='0', GROUP_RANK='0',
                            MASTER_ADDR='127.0.0.1', MASTER_PORT='29581', TORCHELASTIC_RUN_ID='refusal')
GLOO = dict(dist_cfg=dict(backend='gloo'))


@pytest.mark.parametrize('strategy, env_cfg, refusal', [
    (dict(type='lightning.pytorch.strategies.FSDPStrategy'), GLOO,
     r"^strategy.type: Lightning's FSDPStrategy needs GPUs; it refuses the CPU accelerator \(mmengine's "),
    ('deepspeed_stage_2', GLOO, r"^strategy.type: Lightning's DeepSpeedStrategy needs GPUs"),
    (dict(type='DeepSpeedStrategy'), GLOO, r'^strategy.type: DeepSpeedStrategy needs the deepspeed package'),
    (None, dict(dist_cfg=dict(backend='nccl')), r"^env_cfg.dist_cfg.backend: 'nccl' needs GPU devices"),
])
def test_what_the_machine_cannot_run_is_refused_before_anything_is_built(tmp_path, monkeypatch, strategy, env_cfg,
                                                                       refusal):
    """FlexibleRunner and ConfigModule refuse, in one line naming the key, what ``explain`` lists as a refusal
    for this layout: before the process group, the model or a dataset exists, and before the work_dir
    (which mmengine's Runner creates first, empty) or a logger."""
    for key, value in ONE_PROCESS_TORCHRUN.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(sys.modules, 'deepspeed', None)  # not installed (the main test environment)
    work_dir = tmp_path / 'work'
    cfg = dict(model=dict(type='ModelNotToBuild'), work_dir=str(work_dir), experiment_name=f'refused_{tmp_path.name}',
               train_dataloader=dict(dataset=dict(type='DatasetNotToBuild'), batch_size=2,
                                     sampler=dict(type='DefaultSampler')),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=dict(by_epoch=True, max_epochs=1),
               launcher='pytorch', env_cfg=env_cfg, lightning_trainer=dict(accelerator='cpu'),
               **({} if strategy is None else dict(strategy=strategy)))
    explained = explain(cfg, accelerator='cpu', devices=1, num_nodes=1)['warnings']
    for build in (FlexibleRunner.from_cfg, ConfigModule.from_config):
        with pytest.raises(ConfigError, match=refusal) as raised:
            build(cfg)
        assert '\n' not in str(raised.value)
        assert not torch.distributed.is_initialized()
        assert not os.path.exists(work_dir) and not MMLogger.check_instance_created(cfg['experiment_name'])
        assert dict(kind='refusal', key=str(raised.value).partition(':')[0], message=str(raised.value)) in explained


def test_every_runner_keyword_is_a_known_top_level_key():
    from mm_lightning.config.misspellings import TOP_LEVEL_KEYS
    from mm_lightning.runtime.assembly import CONFIG_KEYWORDS
    assert set(CONFIG_KEYWORDS) <= set(TOP_LEVEL_KEYS)
