"""trainer_kwargs: a config's Lightning Trainer arguments, built without running anything."""
import pytest
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.strategies import DDPStrategy

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


def test_nccl_on_cpu_is_refused_with_a_fix(monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(ConfigError, match="env_cfg.dist_cfg.backend: 'nccl' needs CUDA"):
        trainer_kwargs(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))


def test_lightning_callback_priority_is_refused():
    with pytest.raises(ConfigError, match='priority'):
        trainer_kwargs(dict(custom_hooks=[dict(type='lightning.pytorch.callbacks.LearningRateMonitor',
                                               priority='LOW')]))
