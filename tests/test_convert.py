"""Checkpoint conversion both ways: a converted checkpoint resumes exactly in the other format."""
import copy

import torch
from conftest import data
from lightning.pytorch.callbacks import ModelCheckpoint
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_checkpoint
from parity import ParityRecorder, fit_with_own_trainer

from mm_lightning import FlexibleRunner
from mm_lightning.cli import main

CFG = dict(
    model=dict(type='ToyClassifier', dropout=0.3, batch_norm=True),
    train_dataloader=dict(data(size=40, batch_size=4), dataset=dict(type='AugmentedBlobDataset', size=40)),
    val_dataloader=data(size=12, seed=1, shuffle=False, batch_size=4),
    val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
    param_scheduler=[dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=8),
                     dict(type='MultiStepLR', milestones=[2], by_epoch=True)],
    train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1),
    default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=5, by_epoch=False)),
    randomness=dict(seed=8))


def _runner(tmp_path, name, **changes):
    cfg = dict(copy.deepcopy(CFG), work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}',
               **changes)
    runner = FlexibleRunner.from_cfg(cfg)
    recorder = ParityRecorder()
    runner.register_hook(recorder)
    return runner, recorder


def _own_trainer_fit(tmp_path, name, ckpt_path=None, callbacks=()):
    return fit_with_own_trainer(CFG, tmp_path, name, ckpt_path, callbacks)


def _same_weights(a, b):
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key


def test_mmengine_checkpoint_to_lightning_resumes_exactly(tmp_path):
    full, full_rec = _runner(tmp_path, 'full')
    full.train()
    src, dst = str(tmp_path / 'full' / 'iter_15.pth'), str(tmp_path / 'iter_15.ckpt')  # mid-epoch
    assert main(['convert-checkpoint', src, dst]) == 0
    module, rec = _own_trainer_fit(tmp_path, 'lightning', ckpt_path=dst)
    assert rec.iterations[0]['iter'] == 15
    assert rec.iterations == full_rec.iterations[15:]
    assert rec.val_metrics == full_rec.val_metrics[1:]
    _same_weights(full.model, module.model)


def test_lightning_checkpoint_to_mmengine_resumes_exactly(tmp_path):
    every_7 = ModelCheckpoint(dirpath=str(tmp_path / 'ckpts'), filename='step{step}', every_n_train_steps=7,
                              save_top_k=-1, auto_insert_metric_name=False)
    full, full_rec = _own_trainer_fit(tmp_path, 'full', callbacks=[every_7])
    src, dst = str(tmp_path / 'ckpts' / 'step14.ckpt'), str(tmp_path / 'step14.pth')
    assert main(['convert-checkpoint', src, dst]) == 0
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['iter'] == 14 and {'state_dict', 'optimizer', 'param_schedulers'} <= converted.keys()
    load_checkpoint(torch.nn.Module(), dst)  # mmengine's own loader reads it
    resumed, rec = _runner(tmp_path, 'resumed', resume=dst)
    resumed.train()
    assert rec.iterations[0]['iter'] == 14
    assert rec.iterations == full_rec.iterations[14:]
    _same_weights(full.model, resumed.model)


def test_mmengine_written_checkpoint_converts_and_resumes_at_its_counters(tmp_path):
    cfg = dict(copy.deepcopy(CFG), work_dir=str(tmp_path / 'mm'), experiment_name=f'mmw_{tmp_path.name}')
    Runner.from_cfg(cfg).train()  # mmengine pickles HistoryBuffer objects into its files
    dst = str(tmp_path / 'iter_25.ckpt')
    assert main(['convert-checkpoint', str(tmp_path / 'mm' / 'iter_25.pth'), dst]) == 0
    module, rec = _own_trainer_fit(tmp_path, 'lightning', ckpt_path=dst)
    # mmengine saves no position or random state: the run continues at meta's counters, mid-epoch
    assert [r['iter'] for r in rec.iterations] == list(range(25, 30))
    assert (module.runner.epoch, module.runner.iter) == (3, 30)
