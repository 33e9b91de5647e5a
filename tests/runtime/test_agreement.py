"""A user's own Trainer that disagrees with the config is refused before training; one that agrees trains."""
import os.path as osp
import re

import lightning as L
import pytest
from conftest import data
from parity import ParityRecorder

from mm_lightning import ConfigDataModule, ConfigError, ConfigModule, FlexibleRunner, load_config, trainer_kwargs

QUIET = dict(logger=dict(type='LoggerHook', interval=100), checkpoint=dict(type='CheckpointHook', interval=5))
CFG = dict(
    model=dict(type='ToyClassifier'),
    train_dataloader=data(size=16, batch_size=8),
    val_dataloader=data(size=8, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
    param_scheduler=dict(type='CosineAnnealingLR', T_max=20, by_epoch=True),
    train_cfg=dict(by_epoch=True, max_epochs=20, val_interval=5),
    default_hooks=QUIET, randomness=dict(seed=1))
ITER_CFG = dict(CFG, train_cfg=dict(by_epoch=False, max_iters=6, val_interval=3))
OWN = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)


def _fit(cfg, tmp_path, cfg_options=None, **trainer_args):
    """Fit ``cfg`` in a user's ``Trainer(**trainer_args)``; the module and a recorder of its run."""
    cfg = load_config(cfg, dict(work_dir=str(tmp_path), **(cfg_options or {})))
    module = ConfigModule.from_config(cfg)
    recorder = ParityRecorder()
    module.runner.register_hook(recorder)
    L.Trainer(**{**OWN, **trainer_args}).fit(module, datamodule=ConfigDataModule.from_config(cfg))
    return module, recorder


@pytest.mark.parametrize('cfg, setting, value, config', [
    (CFG, 'max_epochs', 3, 'train_cfg.max_epochs=20'),
    (CFG, 'max_epochs', 30, 'train_cfg.max_epochs=20'),
    (CFG, 'max_steps', 4, 'train_cfg.max_epochs=20'),
    (CFG, 'accumulate_grad_batches', 2, 'optim_wrapper.accumulative_counts=1'),
    (CFG, 'check_val_every_n_epoch', 2, 'train_cfg.val_interval=5'),
    (CFG, 'val_check_interval', 0.5, 'train_cfg.val_interval=5'),
    (ITER_CFG, 'max_epochs', 3, 'train_cfg.max_iters=6'),
    (ITER_CFG, 'max_steps', 4, 'train_cfg.max_iters=6'),
    (ITER_CFG, 'accumulate_grad_batches', 2, 'optim_wrapper.accumulative_counts=1'),
    (ITER_CFG, 'check_val_every_n_epoch', 2, 'train_cfg.val_interval=3'),
    (ITER_CFG, 'val_check_interval', 3, 'train_cfg.val_interval=3'),
])
def test_a_contradicting_trainer_setting_is_refused_before_training(tmp_path, cfg, setting, value, config):
    cfg = load_config(cfg, dict(work_dir=str(tmp_path / 'work')))
    module = ConfigModule.from_config(cfg)
    recorder = ParityRecorder()
    module.runner.register_hook(recorder)
    trainer = L.Trainer(**OWN, **{setting: value})
    with pytest.raises(ConfigError, match=re.escape(f'Trainer({setting}={value!r}) contradicts {config}: ')) as err:
        trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))
    assert f'leave {setting} unset' in str(err.value) and '\n' not in str(err.value)
    assert recorder.iterations == [] and not osp.exists(tmp_path / 'work')  # nothing ran, nothing was written


def test_the_message_says_how_to_change_the_config_instead(tmp_path):
    with pytest.raises(ConfigError) as err:
        _fit(CFG, tmp_path, max_epochs=3)
    assert str(err.value) == (
        "Trainer(max_epochs=3) contradicts train_cfg.max_epochs=20: the config sets the run's length (its "
        'schedulers, validation and last checkpoint follow it); set train_cfg.max_epochs=3 (--cfg-options '
        'train_cfg.max_epochs=3) or leave max_epochs unset (or 20)')


@pytest.mark.parametrize('cfg, trainer_args', [
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)), dict()),  # max_epochs: Lightning's 1000
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)), dict(max_epochs=2, max_steps=-1)),
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)), dict(max_epochs=-1)),
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)),
     dict(accumulate_grad_batches=1, check_val_every_n_epoch=1, val_check_interval=1.0)),
    (ITER_CFG, dict()),
    (ITER_CFG, dict(max_epochs=1)),
])
def test_defaults_and_agreeing_settings_train_the_config(tmp_path, cfg, trainer_args):
    module, recorder = _fit(cfg, tmp_path, **trainer_args)
    by_epoch = cfg['train_cfg']['by_epoch']
    assert module.runner.iter == (4 if by_epoch else 6)  # 2 epochs of 2 batches; 6 iterations
    assert len(recorder.val_metrics) == (1 if by_epoch else 2)  # after the last epoch; every 3 iterations


def test_the_settings_trainer_kwargs_gives_agree(tmp_path):
    for name, cfg in (('epochs', dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2))), ('iters', ITER_CFG)):
        cfg = load_config(cfg, dict(work_dir=str(tmp_path / name)))
        module = ConfigModule.from_config(cfg)
        L.Trainer(**trainer_kwargs(cfg)).fit(module, datamodule=ConfigDataModule.from_config(cfg))
        assert module.runner.iter == (4 if name == 'epochs' else 6)


def test_lightnings_default_epochs_are_refused_for_a_longer_config(tmp_path):
    """Trainer() fits 1000 epochs: a 1001-epoch config would stop early, silently."""
    long = dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=1001))
    with pytest.raises(ConfigError, match=re.escape('Trainer(max_epochs=1000) contradicts train_cfg.max_epochs=1001')):
        _fit(long, tmp_path)


def test_a_config_trainer_setting_contradicting_train_cfg_is_refused(tmp_path):
    runner = FlexibleRunner.from_cfg(dict(CFG, work_dir=str(tmp_path), lightning_trainer=dict(max_epochs=3)))
    with pytest.raises(ConfigError, match=re.escape('Trainer(max_epochs=3) contradicts train_cfg.max_epochs=20')):
        runner.train()


def test_a_shorter_run_set_in_the_config_validates_and_saves_at_its_end(tmp_path):
    """train_cfg.max_epochs=3 on a 20-epoch config that validates and saves every 5 epochs: the last epoch
    (the third) validates and saves, as under mmengine."""
    module, recorder = _fit(CFG, tmp_path, dict(train_cfg=dict(max_epochs=3)), max_epochs=3)
    assert module.runner.epoch == 3 and len(recorder.val_metrics) == 1
    assert osp.exists(tmp_path / 'epoch_3.pth')
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read().strip().endswith('epoch_3.pth')


def test_a_train_cfg_without_its_length_is_still_refused_by_the_loop(tmp_path):
    with pytest.raises(ConfigError, match="train_cfg: .*'max_epochs'"):
        _fit(dict(CFG, train_cfg=dict(by_epoch=True)), tmp_path)
