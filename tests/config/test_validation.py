"""Malformed configs: one ConfigError whose first line names the key, what was expected and what was given."""
import copy
import os

import pytest
from conftest import data
from mmengine.config import Config
from paths import ROOT, TESTS

from mm_lightning import ConfigError, trainer_kwargs
from mm_lightning.config.validation import validate_config
from mm_lightning.translate.progress import PROGRESS_BARS

CONFIGS = os.path.join(TESTS, 'configs')

VALID = dict(model=dict(type='ToyClassifier'), work_dir='work_dirs/validation',
             train_dataloader=data(size=16, batch_size=4), val_dataloader=data(size=8, seed=1, shuffle=False),
             val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
             optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9), clip_grad=dict(max_norm=1.0)),
             param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
                              dict(type='MultiStepLR', milestones=[1, 2], gamma=0.1)],
             train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1, val_begin=1),
             default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                                checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2)),
             custom_hooks=[dict(type='EMAHook', priority='ABOVE_NORMAL')],
             log_processor=dict(window_size=5, by_epoch=True,
                                custom_cfg=[dict(data_src='loss', method='mean', window_size='global')]),
             randomness=dict(seed=0, deterministic=False), log_level='INFO', launcher='none',
             progress_bar='tqdm')


def _file_in(tmp_path):
    path = tmp_path / 'a_file'
    path.write_text('')
    return str(path / 'work_dir')


def with_value(cfg, path, value):
    """``cfg`` with ``value`` at dotted ``path`` (integer parts index lists)."""
    cfg = copy.deepcopy(cfg)
    node = cfg
    parts = path.split('.')
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    node[int(last) if last.isdigit() else last] = value
    return cfg


# (where the value goes, the bad value, the key path the first line must start with, text it must hold)
CASES = [
    ('train_cfg', 'two epochs', 'train_cfg', 'expected a dict'),
    ('train_cfg.val_interval', 0, 'train_cfg.val_interval', 'expected a positive integer, got 0'),
    ('train_cfg.val_interval', '2', 'train_cfg.val_interval', "got '2'"),
    ('train_cfg.max_epochs', 'two', 'train_cfg.max_epochs', 'expected a non-negative integer'),
    ('train_cfg.max_epochs', 2.5, 'train_cfg.max_epochs', 'got 2.5'),
    ('train_cfg.val_begin', -1, 'train_cfg.val_begin', 'got -1'),
    ('train_cfg.by_epoch', 'yes', 'train_cfg.by_epoch', 'expected True or False'),
    ('train_cfg.dynamic_intervals', [(1, 2), (3, 0)], 'train_cfg.dynamic_intervals[1]', '(milestone, interval)'),
    ('train_dataloader.batch_size', 0, 'train_dataloader.batch_size', 'expected a positive integer, got 0'),
    ('val_dataloader.batch_size', '8', 'val_dataloader.batch_size', "got '8'"),
    ('train_dataloader.num_workers', -1, 'train_dataloader.num_workers', 'non-negative'),
    ('val_dataloader', 'loader', 'val_dataloader', 'a dict or a DataLoader'),
    ('val_cfg.fp16', 'yes', 'val_cfg.fp16', 'True or False'),
    ('randomness.seed', 'abc', 'randomness.seed', "expected an integer in [0, 2**32) or None, got 'abc'"),
    ('randomness.seed', -1, 'randomness.seed', 'got -1'),
    ('randomness.seed', 2 ** 32, 'randomness.seed', 'got 4294967296'),
    ('randomness.deterministic', 'true', 'randomness.deterministic', 'True or False'),
    ('optim_wrapper.optimizer.type', 'SDG', 'optim_wrapper.optimizer.type', "Did you mean 'SGD'"),
    ('optim_wrapper.optimizer.type', 3, 'optim_wrapper.optimizer.type', 'got 3'),
    ('optim_wrapper.type', 'NoSuchOptimWrapper', 'optim_wrapper.type', "'NoSuchOptimWrapper' is not in"),
    ('optim_wrapper.optimizer.lr', 'x', 'optim_wrapper.optimizer.lr', 'non-negative number'),
    ('optim_wrapper.optimizer.lr', -0.1, 'optim_wrapper.optimizer.lr', 'got -0.1'),
    ('optim_wrapper.clip_grad.max_norm', 'x', 'optim_wrapper.clip_grad.max_norm', "positive number, got 'x'"),
    ('optim_wrapper.clip_grad', dict(type='norm'), 'optim_wrapper.clip_grad', "'max_norm' is missing"),
    ('optim_wrapper.clip_grad', dict(max_norm=1, foo=1), 'optim_wrapper.clip_grad', "unknown argument 'foo'"),
    ('optim_wrapper.clip_grad', dict(type='value', max_norm=1), 'optim_wrapper.clip_grad', "unknown argument"),
    ('optim_wrapper.clip_grad', 5.0, 'optim_wrapper.clip_grad', 'dict(max_norm=..., norm_type=2)'),
    ('optim_wrapper.clip_grad', dict(type='l2', max_norm=1), 'optim_wrapper.clip_grad.type', "'norm', 'value'"),
    ('optim_wrapper.clip_grad', dict(type='value', clip_value=0), 'optim_wrapper.clip_grad.clip_value', 'got 0'),
    ('optim_wrapper.accumulative_counts', 0, 'optim_wrapper.accumulative_counts', 'positive integer, got 0'),
    ('optim_wrapper.loss_scale', 'auto', 'optim_wrapper.loss_scale', "'dynamic'"),
    ('param_scheduler.1.milestones', 3, 'param_scheduler[1].milestones', 'a list of non-negative integers'),
    ('param_scheduler', dict(type='StepLR', step_size=0), 'param_scheduler.step_size', 'positive integer'),
    ('param_scheduler.0.by_epoch', 'no', 'param_scheduler[0].by_epoch', 'True or False'),
    ('param_scheduler.0.begin', -2, 'param_scheduler[0].begin', 'got -2'),
    ('param_scheduler', 'LinearLR', 'param_scheduler', 'a dict or a list'),
    ('param_scheduler.1.gamma', '0.1', 'param_scheduler[1].gamma', 'a number'),
    ('default_hooks', [dict(type='LoggerHook')], 'default_hooks', 'a dict of hook name -> hook config'),
    ('default_hooks.logger.interval', 0, 'default_hooks.logger.interval', 'positive integer, got 0'),
    ('default_hooks.logger.ignore_last', 1, 'default_hooks.logger.ignore_last', 'True or False'),
    ('default_hooks.checkpoint.interval', 'x', 'default_hooks.checkpoint.interval', "got 'x'"),
    ('default_hooks.checkpoint.max_keep_ckpts', '3', 'default_hooks.checkpoint.max_keep_ckpts', 'integer'),
    ('default_hooks.checkpoint.save_best', 3, 'default_hooks.checkpoint.save_best', 'a string'),
    ('default_hooks.logger.priority', 'HIGHEST_EVER', 'default_hooks.logger.priority', 'a priority'),
    ('default_hooks.timer', 'IterTimerHook', 'default_hooks.timer', 'an mmengine Hook'),
    ('custom_hooks', dict(type='EMAHook'), 'custom_hooks', 'a list of hook configs'),
    ('custom_hooks.0', dict(type='EarlyStoppingHook', monitor='toy/accuracy', patience=0),
     'custom_hooks[0].patience', 'positive integer'),
    ('custom_hooks.0.priority', 101, 'custom_hooks[0].priority', 'got 101'),
    ('log_processor.window_size', 'x', 'log_processor.window_size', "positive integer, got 'x'"),
    ('log_processor.window_size', 0, 'log_processor.window_size', 'got 0'),
    ('log_processor.num_digits', -1, 'log_processor.num_digits', 'non-negative'),
    ('log_processor.custom_cfg.0.method', 'median', 'log_processor.custom_cfg[0].method', "'mean'"),
    ('log_processor.custom_cfg.0.window_size', 0, 'log_processor.custom_cfg[0].window_size', "'global'"),
    ('work_dir', _file_in, 'work_dir', 'is not a directory'),
    ('work_dir', 3, 'work_dir', 'got 3'),
    ('log_level', 'LOUD', 'log_level', 'a logging level'),
    ('launcher', 'torchrun', 'launcher', "got 'torchrun'"),
    ('progress_bar', 'fancy', 'progress_bar', "one of 'none', 'tqdm', 'rich', got 'fancy'"),
    ('auto_scale_lr', dict(enable=True, base_batch_size=0), 'auto_scale_lr.base_batch_size', 'positive'),
    ('visualizer', dict(type='Visualizer', vis_backends='LocalVisBackend'), 'visualizer.vis_backends',
     "got 'LocalVisBackend'"),
    # case ignored in suggestions
    ('optim_wrapper.optimizer.type', 'Adamw', 'optim_wrapper.optimizer.type', "Did you mean 'AdamW'"),
    # arguments a registered type does not take, named with the valid ones, before anything is built
    ('optim_wrapper.optimizer.typ', 'AdamW', 'optim_wrapper.optimizer.typ',
     "SGD takes no argument 'typ' (it takes lr, momentum, dampening, weight_decay"),
    ('optim_wrapper.optimizer.typ', 'AdamW', 'optim_wrapper.optimizer.typ', "did you mean 'type'?"),
    ('optim_wrapper.optimizer.lrr', 0.1, 'optim_wrapper.optimizer.lrr', "did you mean 'lr'?"),
    ('optim_wrapper.accumulate', 2, 'optim_wrapper.accumulate', "OptimWrapper takes no argument 'accumulate'"),
    ('optim_wrapper.optimizer', dict(typ='SGD', lr=0.1), 'optim_wrapper.optimizer',
     "no 'type' key (got ['lr', 'typ']); is 'typ' a misspelt 'type'?"),
    ('custom_hooks.0', dict(tpye='EMAHook'), 'custom_hooks[0]', "is 'tpye' a misspelt 'type'?"),
    # a scheduler range the loop no longer fits names both keys
    ('param_scheduler.1.begin', 2, 'param_scheduler[1].begin', 'starts at 2 and ends at train_cfg.max_epochs=2'),
    ('param_scheduler.0.begin', 4, 'param_scheduler[0].begin', 'starts at 4 and ends at param_scheduler[0].end=4'),
]


def _case_id(case):
    return f'{case[2]}={case[1].__name__ if callable(case[1]) else case[1]!r}'


def test_valid_config_passes():
    validate_config(VALID)
    validate_config(Config(VALID))


@pytest.mark.parametrize('where, value, key, text', CASES, ids=[_case_id(case) for case in CASES])
def test_malformed_config(where, value, key, text, tmp_path):
    if callable(value):
        value = value(tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_config(with_value(VALID, where, value))
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(f'{key}: '), first_line
    assert text in first_line, first_line


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='needs /proc')
def test_work_dir_where_nothing_can_be_created_is_refused():
    """Even for root, whom os.access lets write anywhere: the check tries to create a directory."""
    with pytest.raises(ConfigError) as info:
        validate_config(dict(VALID, work_dir='/proc/no/such'))
    message = str(info.value)
    assert message.startswith("work_dir: expected a directory that exists or can be created, got '/proc/no/such' "
                              "(cannot create a directory in '/proc': "), message
    assert '\n' not in message


def test_creatable_work_dir_passes_and_nothing_is_left_behind(tmp_path):
    validate_config(dict(VALID, work_dir=str(tmp_path / 'new' / 'work_dir')))
    (tmp_path / 'existing').mkdir()
    validate_config(dict(VALID, work_dir=str(tmp_path / 'existing')))
    assert sorted(os.listdir(tmp_path)) == ['existing'] and os.listdir(tmp_path / 'existing') == []


def test_first_problem_in_rule_order_is_reported():
    cfg = with_value(with_value(VALID, 'train_cfg.val_interval', 0), 'randomness.seed', 'abc')
    with pytest.raises(ConfigError, match=r'^randomness\.seed: '):
        validate_config(cfg)


def test_none_means_the_default():
    cfg = with_value(with_value(VALID, 'train_cfg.val_interval', None), 'default_hooks.checkpoint', None)
    validate_config(with_value(cfg, 'randomness.seed', None))


def test_whole_float_loop_length_passes():  # mmengine's loops take int(max_epochs) == max_epochs
    validate_config(with_value(VALID, 'train_cfg.max_epochs', 2.0))


def test_built_objects_pass():
    import torch
    from mmengine.hooks import EMAHook
    from mmengine.optim import OptimWrapper
    model = torch.nn.Linear(2, 2)
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    validate_config(dict(VALID, optim_wrapper=optim_wrapper, custom_hooks=[EMAHook()],
                         train_dataloader=torch.utils.data.DataLoader(list(range(4)), batch_size=2)))


def test_custom_constructor_decides_the_optimizer_type():
    validate_config(dict(VALID, model=dict(type='ToyGAN'), optim_wrapper=dict(
        constructor='ToyGANOptimWrapperConstructor',
        generator=dict(optimizer=dict(type='Adam', lr=1e-3)),
        discriminator=dict(optimizer=dict(type='Adam', lr=1e-3)))))
    with pytest.raises(ConfigError, match=r'^optim_wrapper\.constructor: '):
        validate_config(with_value(VALID, 'optim_wrapper.constructor', 'NoSuchConstructor'))


def test_shipped_configs_pass():
    from mm_lightning import load_config
    for name in sorted(os.listdir(CONFIGS)):
        validate_config(load_config(os.path.join(CONFIGS, name)))
    validate_config(load_config(os.path.join(ROOT, 'examples', 'spiral', 'mlp_spiral.py')))


def test_trainer_kwargs_checks_the_runs_keys_and_leaves_each_stages_to_its_start(tmp_path):
    with pytest.raises(ConfigError, match=r"^log_level: expected a logging level"):
        trainer_kwargs(dict(work_dir=str(tmp_path), log_level='LOUD'))
    # training keys are checked when fitting starts (a test-only user of the same config is not refused)
    assert trainer_kwargs(dict(work_dir=str(tmp_path), train_cfg=dict(by_epoch=True, max_epochs=1,
                                                                        val_interval=0)))['max_epochs'] == 1


def test_each_stage_checks_its_own_keys():
    cfg = dict(train_cfg=dict(by_epoch=True, max_epochs=1, val_interval=0),
               test_dataloader=dict(batch_size=0))
    validate_config(cfg, stages=('run',))
    with pytest.raises(ConfigError, match=r'^train_cfg\.val_interval: expected a positive integer, got 0'):
        validate_config(cfg, stages=('train',))
    with pytest.raises(ConfigError, match=r'^test_dataloader\.batch_size: expected a positive integer, got 0'):
        validate_config(cfg, stages=('test',))


def test_progress_bar_names_agree_with_the_trainer():
    for name in PROGRESS_BARS:
        validate_config(dict(progress_bar=name))


def test_schedulers_by_optimizer_name_are_not_mistaken_for_one_without_a_type():
    """An OptimWrapperDict's schedulers: ``param_scheduler=dict(<optimizer name>=scheduler(s), ...)``."""
    validate_config(dict(VALID, param_scheduler=dict(generator=dict(type='LinearLR', by_epoch=False, end=4),
                                                     discriminator=[dict(type='MultiStepLR', milestones=[1])])))
