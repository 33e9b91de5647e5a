"""trainer_kwargs: a config's Lightning Trainer arguments, built without running anything."""
import os

import pytest
from lightning.fabric.plugins.environments import TorchElasticEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.strategies import DDPStrategy
from paths import TESTS

from mm_lightning import ConfigError, trainer_kwargs


def test_epoch_based_settings():
    kwargs = trainer_kwargs(dict(train_cfg=dict(by_epoch=True, max_epochs=7), work_dir='wd'))
    assert kwargs['max_epochs'] == 7 and kwargs['max_steps'] == -1
    assert kwargs['num_sanity_val_steps'] == 0 and kwargs['use_distributed_sampler'] is False
    assert kwargs['logger'] is False and kwargs['enable_checkpointing'] is False
    assert kwargs['accelerator'] == 'cpu' and kwargs['devices'] == 1 and kwargs['strategy'] == 'auto'
    assert kwargs['default_root_dir'].endswith('wd')


def test_iteration_based_runs_one_lightning_epoch():
    assert trainer_kwargs(dict(train_cfg=dict(by_epoch=False, max_iters=100)))['max_epochs'] == 1


def test_lightning_callbacks_in_custom_hooks_and_overrides():
    cfg = dict(custom_hooks=[dict(type='lightning.pytorch.callbacks.LearningRateMonitor', logging_interval='step'),
                             dict(type='EMAHook')],
               lightning_trainer=dict(enable_progress_bar=True), env_cfg=dict(cudnn_benchmark=True))
    kwargs = trainer_kwargs(cfg, max_epochs=2)
    assert [type(c) for c in kwargs['callbacks']] == [LearningRateMonitor]
    assert kwargs['callbacks'][0].logging_interval == 'step'
    assert kwargs['enable_progress_bar'] is True and kwargs['benchmark'] is True and kwargs['max_epochs'] == 2


def test_ddp_under_torchrun_environment(monkeypatch):
    for key, value in dict(WORLD_SIZE='4', LOCAL_WORLD_SIZE='2', RANK='0', LOCAL_RANK='0', GROUP_RANK='0',
                           MASTER_ADDR='127.0.0.1', MASTER_PORT='29500', TORCHELASTIC_RUN_ID='x').items():
        monkeypatch.setenv(key, value)
    kwargs = trainer_kwargs(dict(env_cfg=dict(dist_cfg=dict(backend='gloo', timeout=60)),
                                 strategy=dict(type='DDPStrategy',
                                               model_wrapper=dict(find_unused_parameters=True))))
    assert kwargs['devices'] == 2 and kwargs['num_nodes'] == 2
    strategy = kwargs['strategy']
    assert isinstance(strategy, DDPStrategy) and strategy.process_group_backend == 'gloo'
    assert strategy._ddp_kwargs == {'find_unused_parameters': True}
    assert strategy._timeout.total_seconds() == 60


@pytest.mark.parametrize('strategy, cls', [
    (dict(type='DDPStrategy'), 'DDPStrategy'),
    (dict(type='FSDPStrategy', model_wrapper=dict(sharding_strategy='FULL_SHARD')), 'FSDP2Strategy'),
    pytest.param(dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=3), bf16=dict(enabled=True)),
                 'AnyDeviceDeepSpeedStrategy', marks=pytest.mark.deepspeed),
])
def test_a_gpu_cluster_config_translates_on_a_cpu_machine_outside_torchrun(no_launcher_environment, strategy, cls):
    cfg = dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl')), strategy=strategy,
               train_cfg=dict(by_epoch=False, max_iters=10), train_dataloader=dict(batch_size=4))
    kwargs = trainer_kwargs(cfg, accelerator='gpu', devices=8, num_nodes=2)
    assert (kwargs['accelerator'], kwargs['devices'], kwargs['num_nodes']) == ('gpu', 8, 2)
    assert type(kwargs['strategy']).__name__ == cls
    assert kwargs['strategy'].process_group_backend == 'nccl'
    assert isinstance(kwargs['strategy'].cluster_environment, TorchElasticEnvironment)


def test_layout_arguments_win_over_the_config(no_launcher_environment):
    cfg = dict(launcher='pytorch', lightning_trainer=dict(devices=4, num_nodes=1))
    kwargs = trainer_kwargs(cfg)  # devices and nodes from lightning_trainer: no torchrun variable needed
    assert (kwargs['devices'], kwargs['num_nodes']) == (4, 1)
    kwargs = trainer_kwargs(cfg, launcher='none', devices=1, num_nodes=1, accelerator='cpu')
    assert (kwargs['devices'], kwargs['num_nodes'], kwargs['strategy']) == (1, 1, 'auto')
    with pytest.raises(ConfigError, match=r"accelerator: expected one of .*got 'tpu'"):
        trainer_kwargs(cfg, accelerator='tpu')


def test_lightning_callback_priority_is_refused():
    with pytest.raises(ConfigError, match='priority'):
        trainer_kwargs(dict(custom_hooks=[dict(type='lightning.pytorch.callbacks.LearningRateMonitor',
                                               priority='LOW')]))


def test_without_a_work_dir_every_entry_point_writes_to_work_dirs_of_the_config_name(tmp_path, monkeypatch):
    from mm_lightning import ConfigModule
    monkeypatch.chdir(tmp_path)
    config = os.path.join(TESTS, 'configs', 'plain.yaml')
    expected = str(tmp_path / 'work_dirs' / 'plain')
    assert trainer_kwargs(config)['default_root_dir'] == expected
    assert os.path.abspath(ConfigModule.from_config(config).context.work_dir) == expected
