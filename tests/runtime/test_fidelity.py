"""Lightning's implicit behaviours are neutralised: parity with mmengine where each would show."""
import copy
import os
import warnings

import lightning as L
from conftest import data
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from parity import assert_same_run, run_both
from paths import ROOT

from mm_lightning import ConfigDataModule, ConfigModule, FlexibleRunner, load_config, trainer_kwargs

QUIET = dict(logger=dict(type='LoggerHook', interval=1), checkpoint=dict(type='CheckpointHook', interval=100))
VAL = dict(val_dataloader=data(size=12, seed=1, shuffle=False, batch_size=4),
           val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict())


def test_accumulation_window_spanning_validation_keeps_its_gradients(tmp_path):
    # 10 iterations per epoch, windows of 3: the window 9-11 spans the epoch-end validation
    cfg = dict(model=dict(type='ToyClassifier'), train_dataloader=data(size=40, batch_size=4),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9), accumulative_counts=3),
               train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1), default_hooks=QUIET,
               randomness=dict(seed=1), **VAL)
    assert_same_run(*run_both(cfg, tmp_path), atol=0)


def test_batch_sampler_with_work_after_its_last_yield(tmp_path):
    # an odd-sized dataset leaves indices in the buckets; they must not leak into the next epoch
    loader = dict(dataset=dict(type='BlobDataset', size=23), sampler=dict(type='DefaultSampler', shuffle=True),
                  batch_sampler=dict(type='BucketBatchSampler'), batch_size=4, num_workers=0)
    cfg = dict(model=dict(type='ToyClassifier', dropout=0.2), train_dataloader=loader,
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
               train_cfg=dict(by_epoch=True, max_epochs=4), default_hooks=QUIET, randomness=dict(seed=2))
    reference, ours = run_both(cfg, tmp_path)
    assert len(ours.iterations) == 4 * 6
    assert_same_run(reference, ours, atol=0)


def test_model_mode_around_validation_matches_mmengine(tmp_path):
    cfg = dict(model=dict(type='ToyClassifier', dropout=0.2), train_dataloader=data(size=16, batch_size=4),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
               train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1), default_hooks=QUIET,
               custom_hooks=[dict(type='ModeRecordingHook')], randomness=dict(seed=3), **VAL)
    reference, ours = run_both(cfg, tmp_path)
    modes = [h for h in ours.runner.hooks if type(h).__name__ == 'ModeRecordingHook'][0].modes
    expected = [h for h in reference.runner.hooks if type(h).__name__ == 'ModeRecordingHook'][0].modes
    assert modes == expected
    assert ('before_val', True) in modes and ('before_val_epoch', True) in modes
    assert ('before_train_epoch', False) in modes  # after a validation, train() comes after this hook
    assert_same_run(reference, ours, atol=0)


def test_a_plain_user_trainer_is_neutralised_too(tmp_path):
    """Default Trainer settings (sanity check, inference mode, samplers, progress bar) change nothing."""
    cfg = dict(model=dict(type='ToyClassifier', dropout=0.3), train_dataloader=data(size=20, batch_size=4),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1), accumulative_counts=2),
               train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1), default_hooks=QUIET,
               randomness=dict(seed=4), **VAL)
    reference, _ = run_both(cfg, tmp_path)
    own = load_config(copy.deepcopy(cfg), dict(work_dir=str(tmp_path / 'own'), experiment_name=f'own_{tmp_path.name}'))
    module = ConfigModule.from_config(own)
    from parity import ParityRecorder
    recorder = ParityRecorder()
    module.runner.register_hook(recorder)
    L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False).fit(
        module, datamodule=ConfigDataModule.from_config(own))
    assert recorder.iterations == reference.iterations and recorder.val_metrics == reference.val_metrics


def test_the_trainer_gets_its_validation_cadence_back_after_fitting(tmp_path):
    """The hook bridge rewrites check_val_every_n_epoch while it fits (here: no validation in the next epoch);
    the Trainer is handed back with its own, so it can fit again."""
    cfg = dict(model=dict(type='ToyClassifier'), train_dataloader=data(size=16, batch_size=8),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=dict(by_epoch=True, max_epochs=2),
               default_hooks=QUIET, work_dir=str(tmp_path))
    runner = FlexibleRunner.from_cfg(cfg)
    runner.train()
    assert runner.trainer.check_val_every_n_epoch == 1
    runner.train()  # the run is complete: nothing more to train
    assert runner.iter == 4


SPIRAL = os.path.join(ROOT, 'examples', 'spiral',
                      'mlp_spiral.py')


def test_lightning_callbacks_with_their_defaults_read_metrics_after_mmengines_validations(tmp_path):
    """EarlyStopping, ModelCheckpoint(monitor=...) and LearningRateMonitor, defaults otherwise, in a user's
    own Trainer: the spiral example validates every 2 epochs, and epoch 1 has no metric to read."""
    cfg = load_config(SPIRAL, ['train_cfg.max_epochs=4', 'train_dataloader.batch_size=320', f'work_dir={tmp_path}'])
    early_stopping = EarlyStopping(monitor='spiral/accuracy', mode='max')
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / 'ckpt'), monitor='spiral/accuracy', mode='max')
    kwargs = trainer_kwargs(cfg)
    kwargs.update(logger=CSVLogger(str(tmp_path), name='csv'), enable_checkpointing=True)
    kwargs['callbacks'] += [early_stopping, checkpoint, LearningRateMonitor()]
    trainer = L.Trainer(**kwargs)
    trainer.fit(ConfigModule.from_config(cfg), datamodule=ConfigDataModule.from_config(cfg))
    assert trainer.current_epoch == 4
    assert early_stopping.wait_count in (0, 1)  # checked after validations 2 and 4 only
    assert float(early_stopping.best_score) == float(checkpoint.best_model_score)
    assert os.path.basename(checkpoint.best_model_path).split('-')[0] in ('epoch=1', 'epoch=3')
    with open(os.path.join(trainer.logger.log_dir, 'metrics.csv')) as f:
        assert 'lr-AdamW' in f.readline().split(',')


def test_no_console_warning_of_lightnings_own_torch_deprecations_or_routed_steps(tmp_path):
    """Lightning 2.6.6 builds a deprecated torch ``LeafSpec`` for every stage's loaders (ignored, see fidelity), and
    mmengine's schedulers keep counting the optimizer steps routed through Lightning (no "overridden" warning)."""
    cfg = dict(model=dict(type='ToyClassifier'), train_dataloader=data(size=16, batch_size=4),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
               param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4),
               train_cfg=dict(by_epoch=True, max_epochs=2), default_hooks=QUIET, randomness=dict(seed=0),
               work_dir=str(tmp_path), experiment_name=f'warnings_{tmp_path.name}', **VAL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        runner = FlexibleRunner.from_cfg(cfg)
        runner.train()
        runner.val()
    messages = [str(warning.message) for warning in caught]
    assert not [m for m in messages if 'LeafSpec' in m or 'optimizer.step()' in m], messages
