"""A user's own Trainer settings run as the config keys that mean the same, given through --cfg-options, would;
a setting with no mmengine meaning for the config's loop is refused before training."""
import os
import os.path as osp
import re
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import data
from parity import ParityRecorder

from mm_lightning import ConfigDataModule, ConfigError, ConfigModule, FlexibleRunner, load_config, trainer_kwargs
from mm_lightning.runtime.trainer_settings import TRANSLATIONS, UNSET, config_overrides, read_settings

QUIET = dict(logger=dict(type='LoggerHook', interval=100), checkpoint=dict(type='CheckpointHook', interval=5))
CFG = dict(
    model=dict(type='ToyClassifier'),
    train_dataloader=data(size=16, batch_size=4),
    val_dataloader=data(size=8, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
    param_scheduler=dict(type='CosineAnnealingLR', by_epoch=True),
    train_cfg=dict(by_epoch=True, max_epochs=20, val_interval=5),
    default_hooks=QUIET, randomness=dict(seed=1))
ITER_CFG = dict(CFG, train_cfg=dict(by_epoch=False, max_iters=20, val_interval=10),
                param_scheduler=dict(type='CosineAnnealingLR', by_epoch=False))
OWN = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)


def _fit(cfg, work_dir, cfg_options=None, **trainer_args):
    """Fit ``cfg`` in a user's ``Trainer(**trainer_args)``; the module, its Trainer and a recorder of its run."""
    cfg = load_config(cfg, dict(work_dir=str(work_dir), **(cfg_options or {})))
    module = ConfigModule.from_config(cfg)
    recorder = ParityRecorder()
    module.runner.register_hook(recorder)
    trainer = L.Trainer(**{**OWN, **trainer_args})
    trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))
    return module, trainer, recorder


def _checkpoints(work_dir):
    return sorted(name for name in os.listdir(work_dir) if name.endswith('.pth'))


@pytest.mark.parametrize('cfg, trainer_args, cfg_options', [
    (CFG, dict(max_epochs=3), {'train_cfg.max_epochs': 3}),
    (CFG, dict(check_val_every_n_epoch=2, max_epochs=5), {'train_cfg.val_interval': 2, 'train_cfg.max_epochs': 5}),
    (CFG, dict(accumulate_grad_batches=3, max_epochs=2),
     {'optim_wrapper.accumulative_counts': 3, 'train_cfg.max_epochs': 2}),
    (CFG, dict(gradient_clip_val=0.05, max_epochs=2), {'optim_wrapper.clip_grad.max_norm': 0.05,
                                                       'train_cfg.max_epochs': 2}),
    (CFG, dict(gradient_clip_val=0.01, gradient_clip_algorithm='value', max_epochs=2),
     {'optim_wrapper.clip_grad': dict(type='value', clip_value=0.01), 'train_cfg.max_epochs': 2}),
    (ITER_CFG, dict(max_steps=7), {'train_cfg.max_iters': 7}),
    (ITER_CFG, dict(max_steps=9, val_check_interval=4), {'train_cfg.max_iters': 9, 'train_cfg.val_interval': 4}),
    (ITER_CFG, dict(max_steps=8, val_check_interval=0.25), {'train_cfg.max_iters': 8, 'train_cfg.val_interval': 2}),
    (ITER_CFG, dict(max_steps=8, accumulate_grad_batches=2, check_val_every_n_epoch=None, val_check_interval=4),
     {'train_cfg.max_iters': 8, 'optim_wrapper.accumulative_counts': 2, 'train_cfg.val_interval': 4}),
], ids=['max_epochs', 'check_val_every_n_epoch', 'accumulate_grad_batches', 'gradient_clip_val',
        'gradient_clip_value', 'max_steps', 'val_check_interval', 'val_check_fraction', 'iter_accumulate'])
def test_a_trainer_setting_runs_as_its_config_key_would(tmp_path, cfg, trainer_args, cfg_options):
    """Every iteration's losses and LRs, each validation, the weights (atol 0) and the checkpoints written."""
    ours, trainer, ours_record = _fit(cfg, tmp_path / 'trainer', **trainer_args)
    twin, _, twin_record = _fit(cfg, tmp_path / 'options', cfg_options)
    assert ours_record.iterations == twin_record.iterations and ours_record.iterations
    assert ours_record.val_metrics == twin_record.val_metrics and ours_record.val_metrics
    for (name, ours_weight), twin_weight in zip(ours.model.state_dict().items(), twin.model.state_dict().values()):
        assert torch.equal(ours_weight, twin_weight), name
    assert _checkpoints(tmp_path / 'trainer') == _checkpoints(tmp_path / 'options')
    dumped = [{**module.cfg.to_dict(), 'work_dir': None} for module in (ours, twin)]
    assert dumped[0] == dumped[1]  # the config dumped and saved says what ran
    # Lightning's copies are handed over: neither Lightning nor a later fit applies them a second time
    assert (trainer.accumulate_grad_batches, trainer.gradient_clip_val, trainer.max_steps) == (1, None, -1)
    assert trainer.max_epochs == (ours.runner.max_epochs if cfg['train_cfg']['by_epoch'] else 1)


def test_the_last_epoch_of_a_shorter_trainer_validates_and_saves(tmp_path):
    """Trainer(max_epochs=3) on a 20-epoch config that validates and saves every 5 epochs: the third epoch
    validates and saves, the scheduler ends there, as under mmengine with train_cfg.max_epochs=3."""
    module, _, recorder = _fit(CFG, tmp_path, max_epochs=3)
    assert module.runner.epoch == 3 and len(recorder.val_metrics) == 1
    assert _checkpoints(tmp_path) == ['epoch_3.pth']
    assert module.param_schedulers[0].end == 3 and recorder.iterations[-1]['lr/lr'][0] < 0.1 / 2


@pytest.mark.parametrize('cfg, trainer_args, message', [
    (CFG, dict(max_steps=4), 'Trainer(max_steps=4) has no meaning for the epoch-based train_cfg.max_epochs=20: '),
    (CFG, dict(val_check_interval=0.5),
     'Trainer(val_check_interval=0.5) has no meaning for the epoch-based train_cfg.max_epochs=20: '),
    (CFG, dict(val_check_interval=2), 'Trainer(val_check_interval=2) has no meaning for the epoch-based '),
    (CFG, dict(check_val_every_n_epoch=None, val_check_interval=2), 'Trainer(check_val_every_n_epoch=None) has '),
    (ITER_CFG, dict(max_epochs=3), 'Trainer(max_epochs=3) has no meaning for the iteration-based '
                                   'train_cfg.max_iters=20: '),
    (ITER_CFG, dict(check_val_every_n_epoch=2), 'Trainer(check_val_every_n_epoch=2) has no meaning for the '
                                                'iteration-based train_cfg.max_iters=20: '),
    (dict(CFG, optim_wrapper=dict(generator=dict(optimizer=dict(type='SGD', lr=0.1)))),
     dict(accumulate_grad_batches=2), 'Trainer(accumulate_grad_batches=2) has no meaning for '
                                      'optim_wrapper.accumulative_counts: optim_wrapper holds several'),
])
def test_a_setting_without_an_mmengine_meaning_is_refused_before_anything_runs(tmp_path, cfg, trainer_args, message):
    cfg = load_config(cfg, dict(work_dir=str(tmp_path / 'work')))
    module = ConfigModule.from_config(cfg)
    recorder = ParityRecorder()
    module.runner.register_hook(recorder)
    trainer = L.Trainer(**OWN, **trainer_args)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))
    assert str(err.value).endswith('unset') and '\n' not in str(err.value)
    assert recorder.iterations == [] and not osp.exists(tmp_path / 'work')  # nothing ran, nothing was written


@pytest.mark.parametrize('cfg, trainer_args', [
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)), dict()),  # max_epochs: Lightning's 1000
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)), dict(max_epochs=2, max_steps=-1)),
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)), dict(max_epochs=-1)),
    (dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=5)),
     dict(accumulate_grad_batches=1, check_val_every_n_epoch=1, val_check_interval=1.0, gradient_clip_val=0)),
    (dict(ITER_CFG, train_cfg=dict(by_epoch=False, max_iters=6, val_interval=3)), dict()),
    (dict(ITER_CFG, train_cfg=dict(by_epoch=False, max_iters=6, val_interval=3)), dict(max_epochs=1)),
])
def test_unset_settings_train_the_config_and_lightning_counts_its_epochs(tmp_path, cfg, trainer_args):
    module, trainer, recorder = _fit(cfg, tmp_path, **trainer_args)
    by_epoch = cfg['train_cfg']['by_epoch']
    assert module.runner.iter == (8 if by_epoch else 6)  # 2 epochs of 4 batches; 6 iterations
    assert len(recorder.val_metrics) == (1 if by_epoch else 2)  # after the last epoch; every 3 iterations
    assert trainer.max_epochs == (2 if by_epoch else 1)  # what progress bars show


def test_lightnings_default_epochs_leave_a_longer_config_its_length():
    """Trainer() reads max_epochs=1000: a 1001-epoch config keeps its length (Lightning's is handed over)."""
    trainer = SimpleNamespace(max_epochs=1000, max_steps=-1, check_val_every_n_epoch=1, val_check_interval=1.0,
                              accumulate_grad_batches=1, gradient_clip_val=None, gradient_clip_algorithm=None)
    assert config_overrides(read_settings(trainer), dict(by_epoch=True, max_epochs=1001), CFG['optim_wrapper']) == {}


def test_every_translated_setting_has_its_unset_values():
    for translations in TRANSLATIONS.values():
        assert {translation.setting for translation in translations} == set(UNSET)


def test_the_settings_trainer_kwargs_gives_train_the_config(tmp_path):
    for name, cfg in (('epochs', dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2))),
                      ('iters', dict(ITER_CFG, train_cfg=dict(by_epoch=False, max_iters=6)))):
        cfg = load_config(cfg, dict(work_dir=str(tmp_path / name)))
        module = ConfigModule.from_config(cfg)
        L.Trainer(**trainer_kwargs(cfg)).fit(module, datamodule=ConfigDataModule.from_config(cfg))
        assert module.runner.iter == (8 if name == 'epochs' else 6)


def test_a_config_trainer_setting_is_the_runs_length(tmp_path):
    """``lightning_trainer=dict(max_epochs=3)`` in a config is a Trainer setting like any other."""
    runner = FlexibleRunner.from_cfg(dict(CFG, work_dir=str(tmp_path), lightning_trainer=dict(max_epochs=3)))
    runner.train()
    assert runner.epoch == 3 and _checkpoints(tmp_path) == ['epoch_3.pth']


def test_a_second_fit_cannot_change_a_built_loop(tmp_path):
    cfg = load_config(dict(CFG, train_cfg=dict(by_epoch=True, max_epochs=2)), dict(work_dir=str(tmp_path)))
    module = ConfigModule.from_config(cfg)
    datamodule = ConfigDataModule.from_config(cfg)
    L.Trainer(**OWN).fit(module, datamodule=datamodule)
    with pytest.raises(ConfigError, match=re.escape('train_cfg.max_epochs: the training loop is already built with '
                                                    "max_epochs=2; the Trainer's 4 comes too late")):
        L.Trainer(**OWN, max_epochs=4).fit(module, datamodule=datamodule)


def test_a_train_cfg_without_its_length_is_still_refused_by_the_loop(tmp_path):
    with pytest.raises(ConfigError, match="train_cfg: .*'max_epochs'"):
        _fit(dict(CFG, train_cfg=dict(by_epoch=True)), tmp_path)
