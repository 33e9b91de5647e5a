"""The hook bridge calls mmengine hooks in mmengine's order of events, with mmengine's arguments."""
import copy

import pytest
from conftest import data
from mmengine.runner import Runner

from mm_lightning import FlexibleRunner

EVAL = dict(val_dataloader=data(size=10, seed=1, shuffle=False, batch_size=4),
            val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
            test_dataloader=data(size=6, seed=2, shuffle=False, batch_size=4),
            test_evaluator=dict(type='ToyAccuracy'), test_cfg=dict())
TRAIN = dict(model=dict(type='ToyClassifier'), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
             randomness=dict(seed=0), **EVAL)


def _events(runner_cls, cfg, tmp_path, name, run=('train', 'test')):
    cfg = copy.deepcopy(cfg)
    cfg.update(work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}',
               custom_hooks=[dict(type='RecordingHook')])
    runner = runner_cls.from_cfg(cfg)
    recorder = next(h for h in runner.hooks if type(h).__name__ == 'RecordingHook')
    for method in run:
        getattr(runner, method)()
    return recorder.events


def _compare(cfg, tmp_path, run=('train', 'test')):
    reference = _events(Runner, cfg, tmp_path, 'mm', run)
    ours = _events(FlexibleRunner, cfg, tmp_path, 'ours', run)
    assert ours == reference
    return ours


@pytest.mark.parametrize('train_cfg', [
    dict(by_epoch=True, max_epochs=3, val_interval=1),
    dict(by_epoch=True, max_epochs=5, val_interval=2, val_begin=2),
    dict(by_epoch=True, max_epochs=6, val_interval=3, dynamic_intervals=[(3, 1)]),
], ids=['every-epoch', 'interval-begin', 'dynamic'])
def test_epoch_based_event_order(tmp_path, train_cfg):
    cfg = dict(TRAIN, train_dataloader=data(size=12, batch_size=4), train_cfg=train_cfg)
    events = _compare(cfg, tmp_path)
    assert events[0][0] == 'before_run' and events[-1][0] == 'after_run'


@pytest.mark.parametrize('train_cfg', [
    dict(by_epoch=False, max_iters=10, val_interval=4),
    dict(by_epoch=False, max_iters=9, val_interval=2, val_begin=5, dynamic_intervals=[(6, 3)]),
], ids=['interval', 'begin-dynamic'])
def test_iteration_based_event_order(tmp_path, train_cfg):
    cfg = dict(TRAIN, train_dataloader=data(size=12, batch_size=4, sampler='InfiniteSampler'),
               train_cfg=train_cfg)
    _compare(cfg, tmp_path)


def test_iteration_based_with_finite_sampler_restarts_the_loader(tmp_path):
    # mmengine restarts an exhausted loader (and pauses 2 s doing so); we use its iterator.
    cfg = dict(TRAIN, train_dataloader=data(size=8, batch_size=4), train_cfg=dict(by_epoch=False, max_iters=3))
    _compare(cfg, tmp_path, run=('train',))


def test_standalone_val_and_test_event_order(tmp_path):
    cfg = dict(model=dict(type='ToyClassifier'), randomness=dict(seed=0), **EVAL)
    events = _compare(cfg, tmp_path, run=('val', 'test'))
    assert [e[0] for e in events[:3]] == ['before_run', 'before_val', 'before_val_epoch']


def test_resume_event_order(tmp_path):
    """Resumed from the end of epoch 1, the run goes on as the uninterrupted one did from there.

    mmengine's resume skips the validation that was due after epoch 1 (its checkpoint is
    written before it); ours runs it first, so the later events match the uninterrupted run.
    """
    cfg = dict(TRAIN, train_dataloader=data(size=12, batch_size=4),
               train_cfg=dict(by_epoch=True, max_epochs=3))
    full = _events(FlexibleRunner, dict(cfg, default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1))),
                   tmp_path, 'src', run=('train',))
    resumed = dict(cfg, load_from=str(tmp_path / 'src' / 'epoch_1.pth'), resume=True)
    events = _events(FlexibleRunner, resumed, tmp_path, 'resumed', run=('train',))
    assert events[:3] == [('before_run', 0, 0, None), ('after_load_checkpoint', 0, 0, None),
                          ('before_train', 1, 3, None)]
    continuation = full.index(('after_train_epoch', 0, 3, None)) + 1
    assert full[continuation] == ('before_val', 1, 3, None)
    assert events[3:] == full[continuation:]
