"""Each built-in mmengine hook under FlexibleRunner against the same hook under mmengine's Runner."""
import copy
import json
import os
import re
import subprocess
import sys
from unittest import mock

import pytest
import torch
from conftest import data
from mmengine.hooks import EmptyCacheHook
from mmengine.runner import Runner

from mm_lightning import FlexibleRunner
from mm_lightning.state.serialization import from_safe
from mm_lightning.state.serialization import make_safe as convert_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), 'torchrun')

EVAL = dict(val_dataloader=data(size=12, seed=1, shuffle=False, batch_size=4),
            val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict())
BASE = dict(model=dict(type='ToyClassifier', batch_norm=True), train_dataloader=data(size=24, batch_size=4),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
            param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=True),
            train_cfg=dict(by_epoch=True, max_epochs=4), randomness=dict(seed=3), **EVAL)


def _both(cfg, tmp_path, run=('train',)):
    runners = {}
    for name, cls in (('mm', Runner), ('ours', FlexibleRunner)):
        one = copy.deepcopy(cfg)
        one.update(work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}')
        runner = cls.from_cfg(one)
        for method in run:
            getattr(runner, method)()
        runners[name] = runner
    return runners['mm'], runners['ours']


def _read(path):
    if os.path.basename(os.path.dirname(path)) == 'mm' or '/mm/' in path:
        converted = path + '.safe'
        convert_checkpoint(path, converted)
        path = converted
    return from_safe(torch.load(path, weights_only=True))


def _files(directory):
    """Checkpoint files (the timestamped log folder and dumped config aside)."""
    return sorted(f for f in os.listdir(directory) if f.endswith('.pth') or f == 'last_checkpoint')


def _same_weights(a, b):
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_checkpoint_hook_options(tmp_path):
    cfg = dict(BASE, train_cfg=dict(by_epoch=True, max_epochs=5), default_hooks=dict(checkpoint=dict(
        type='CheckpointHook', interval=2, max_keep_ckpts=2, save_best='toy/accuracy', rule='greater',
        save_last=True, save_begin=1, filename_tmpl='ckpt_{}.pth', save_optimizer=False,
        save_param_scheduler=False)))
    mm, ours = _both(cfg, tmp_path)
    assert _files(ours.work_dir) == _files(mm.work_dir)
    assert 'ckpt_5.pth' in _files(ours.work_dir)  # save_last
    for name in _files(ours.work_dir):
        if not name.endswith('.pth'):
            continue
        ours_ckpt, mm_ckpt = _read(os.path.join(ours.work_dir, name)), _read(os.path.join(mm.work_dir, name))
        # ours adds the exact-resume state (progress, data position, random state) under 'mm_lightning'
        assert ours_ckpt.keys() == mm_ckpt.keys() | {'mm_lightning'} and 'optimizer' not in ours_ckpt, name
        _same_weights(ours_ckpt['state_dict'], mm_ckpt['state_dict'])
        assert ours_ckpt['meta']['epoch'] == mm_ckpt['meta']['epoch']
    assert ours.message_hub.get_info('best_score') == mm.message_hub.get_info('best_score')
    assert ours.message_hub.get_info('best_ckpt') .replace(ours.work_dir, '') == \
        mm.message_hub.get_info('best_ckpt').replace(mm.work_dir, '')


def test_checkpoint_hook_published_keys(tmp_path):
    # mmengine's own publishing re-reads its checkpoint, which torch>=2.6 refuses; ours loads safely.
    cfg = dict(BASE, work_dir=str(tmp_path), experiment_name=f'pub_{tmp_path.name}',
               default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, save_best='toy/accuracy',
                                                  published_keys=['meta', 'state_dict'])))
    FlexibleRunner.from_cfg(cfg).train()
    published = [f for f in os.listdir(tmp_path) if re.search(r'-[0-9a-f]{8}\.pth$', f)]
    assert len(published) == 2  # the best and the last checkpoint
    assert all(os.path.isfile(tmp_path / re.sub(r'-[0-9a-f]{8}\.pth$', '.pth', f)) for f in published)
    for name in published:
        assert set(torch.load(tmp_path / name, weights_only=True)) == {'meta', 'state_dict'}


def test_checkpoint_hook_by_iteration_with_out_dir(tmp_path):
    out_dir = str(tmp_path / 'out')
    cfg = dict(BASE, default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=5, by_epoch=False,
                                                        out_dir=out_dir, save_best='auto', rule='less',
                                                        max_keep_ckpts=3)))
    mm, ours = _both(cfg, tmp_path)
    assert _files(os.path.join(out_dir, 'ours')) == _files(os.path.join(out_dir, 'mm'))
    assert 'iter_20.pth' in _files(os.path.join(out_dir, 'ours'))
    _same_weights(_read(os.path.join(out_dir, 'ours', 'iter_20.pth'))['state_dict'],
                  _read(os.path.join(out_dir, 'mm', 'iter_20.pth'))['state_dict'])


TIME_FIELDS = re.compile(r'(eta: [0-9:]+|time: [0-9.]+|data_time: [0-9.]+)')


def _log_lines(runner):
    with open(os.path.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        lines = [line.split(' - mmengine - ', 1)[-1].rstrip() for line in f]
    keep = [TIME_FIELDS.sub('', line) for line in lines
            if line.startswith(('INFO - Epoch(', 'INFO - Iter(', 'INFO - Saving checkpoint'))]
    return keep


def _scalars(runner):
    with open(os.path.join(runner.log_dir, 'vis_data', 'scalars.json')) as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in ('time', 'data_time', 'eta')} for r in records]


@pytest.mark.parametrize('logger', [
    dict(type='LoggerHook', interval=2),
    dict(type='LoggerHook', interval=3, log_metric_by_epoch=False, ignore_last=False),
], ids=['by-epoch', 'by-iter-metrics'])
def test_logger_hook_lines_and_scalars(tmp_path, logger):
    cfg = dict(BASE, default_hooks=dict(logger=logger), test_dataloader=EVAL['val_dataloader'],
               test_evaluator=EVAL['val_evaluator'], test_cfg=dict())
    mm, ours = _both(cfg, tmp_path, run=('train', 'test'))
    assert _log_lines(ours) == _log_lines(mm) and len(_log_lines(ours)) > 10
    assert _scalars(ours) == _scalars(mm)


def test_logger_hook_out_dir_keep_local(tmp_path):
    out_dir = str(tmp_path / 'logs_out')
    cfg = dict(BASE, default_hooks=dict(logger=dict(type='LoggerHook', out_dir=out_dir, keep_local=False)))
    mm, ours = _both(cfg, tmp_path)
    listings = {}
    for runner, name in ((mm, 'mm'), (ours, 'ours')):
        copied = os.path.join(out_dir, name)
        listings[name] = [f.replace(runner.timestamp, 'TIME') for f in
                          sorted(os.listdir(copied)) + sorted(os.listdir(os.path.join(copied, 'vis_data')))]
        assert 'TIME.log' in listings[name]
        assert not os.path.exists(os.path.join(runner.log_dir, f'{runner.timestamp}.log'))  # keep_local=False
    assert listings['ours'] == listings['mm']


def test_runtime_info_and_iter_timer(tmp_path):
    mm, ours = _both(BASE, tmp_path)
    ignore = {'cfg', 'experiment_name', 'eta', 'last_ckpt'}
    mm_info = {k: v for k, v in mm.message_hub.runtime_info.items() if k not in ignore}
    ours_info = {k: v for k, v in ours.message_hub.runtime_info.items() if k not in ignore}
    assert ours_info == mm_info and len(ours_info) >= 6
    assert os.path.basename(ours.message_hub.get_info('last_ckpt')) == 'epoch_4.pth'
    assert ours.message_hub.log_scalars.keys() == mm.message_hub.log_scalars.keys()
    for key in ('train/loss', 'train/lr', 'val/toy/accuracy'):
        assert ours.message_hub.get_scalar(key).data[0].tolist() == pytest.approx(
            mm.message_hub.get_scalar(key).data[0].tolist(), abs=1e-6)
    assert len(ours.message_hub.get_scalar('train/time').data[0]) == 24  # IterTimerHook, every iteration
    assert ours.message_hub.get_info('eta') >= 0


@pytest.mark.parametrize('ema', [
    dict(type='EMAHook', momentum=0.1),
    dict(type='EMAHook', ema_type='MomentumAnnealingEMA', momentum=0.2, gamma=10, begin_iter=5),
    dict(type='EMAHook', ema_type='StochasticWeightAverage', begin_epoch=2),
], ids=['ema', 'annealing-begin-iter', 'swa-begin-epoch'])
def test_ema_hook(tmp_path, ema):
    cfg = dict(BASE, custom_hooks=[ema], default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2)))
    mm, ours = _both(cfg, tmp_path)

    def ema_state(runner):
        hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
        return hook.ema_model.state_dict()

    _same_weights(ema_state(ours), ema_state(mm))
    _same_weights(dict(ours.model.state_dict()), dict(mm.model.state_dict()))
    for name in ('epoch_2.pth', 'epoch_4.pth'):
        ours_ckpt, mm_ckpt = _read(os.path.join(ours.work_dir, name)), _read(os.path.join(mm.work_dir, name))
        _same_weights(ours_ckpt['ema_state_dict'], mm_ckpt['ema_state_dict'])
        _same_weights(ours_ckpt['state_dict'], mm_ckpt['state_dict'])  # EMA weights swapped in
    assert ours.message_hub.get_scalar('val/toy/accuracy').data[0].tolist() == \
        mm.message_hub.get_scalar('val/toy/accuracy').data[0].tolist()


@pytest.mark.parametrize('early', [
    dict(type='EarlyStoppingHook', monitor='toy/accuracy', patience=2),
    dict(type='EarlyStoppingHook', monitor='toy/accuracy', rule='greater', min_delta=5.0, patience=1),
    dict(type='EarlyStoppingHook', monitor='toy/accuracy', stopping_threshold=60.0),
    dict(type='EarlyStoppingHook', monitor='missing/metric', rule='greater', strict=False),
], ids=['patience', 'min-delta', 'threshold', 'not-strict'])
def test_early_stopping_hook(tmp_path, early):
    cfg = dict(BASE, train_cfg=dict(by_epoch=True, max_epochs=12), custom_hooks=[early],
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.02)))
    mm, ours = _both(cfg, tmp_path)
    assert (ours.epoch, ours.iter) == (mm.epoch, mm.iter)
    assert ours.trainer.current_epoch == ours.epoch
    assert (ours.epoch < 12) == (early['monitor'] != 'missing/metric')  # it did stop early


def test_early_stopping_strict_missing_metric_raises(tmp_path):
    cfg = dict(BASE, custom_hooks=[dict(type='EarlyStoppingHook', monitor='missing/metric', rule='less',
                                        strict=True)])
    one = dict(cfg, work_dir=str(tmp_path), experiment_name=f'strict_{tmp_path.name}')
    with pytest.raises(RuntimeError, match='missing/metric'):
        FlexibleRunner.from_cfg(one).train()


def test_stop_training_from_any_hook(tmp_path):
    for train_cfg, sampler in ((dict(by_epoch=True, max_epochs=5), 'DefaultSampler'),
                               (dict(by_epoch=False, max_iters=30, val_interval=4), 'InfiniteSampler')):
        cfg = dict(BASE, train_cfg=train_cfg, train_dataloader=data(size=24, batch_size=4, sampler=sampler),
                   custom_hooks=[dict(type='StopAtIterHook', stop_iter=9)])
        mm, ours = _both(cfg, tmp_path / train_cfg['by_epoch'].__str__())
        assert (ours.epoch, ours.iter) == (mm.epoch, mm.iter)
        assert ours.message_hub.get_scalar('val/toy/accuracy').data[0].tolist() == \
            mm.message_hub.get_scalar('val/toy/accuracy').data[0].tolist()


def test_profiler_hook(tmp_path):
    runners = []
    for name, cls in (('mm', Runner), ('ours', FlexibleRunner)):
        cfg = dict(BASE, train_cfg=dict(by_epoch=True, max_epochs=2), custom_hooks=[
            dict(type='ProfilerHook', by_epoch=False, profile_times=3,
                 json_trace_path=str(tmp_path / f'{name}_trace.json'))],
            work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}')
        runner = cls.from_cfg(cfg)
        runner.train()
        runners.append(runner)
        with open(tmp_path / f'{name}_trace.json') as f:  # the profiler stopped after 3 iterations
            assert json.load(f)['traceEvents']
    _same_weights(dict(runners[1].model.state_dict()), dict(runners[0].model.state_dict()))


def test_empty_cache_hook_runs_at_mmengine_points(tmp_path):
    cfg = dict(BASE, train_cfg=dict(by_epoch=True, max_epochs=2), test_dataloader=EVAL['val_dataloader'],
               test_evaluator=EVAL['val_evaluator'], test_cfg=dict(),
               custom_hooks=[dict(type='EmptyCacheHook', before_epoch=True, after_iter=True)])
    calls = {}
    for name, cls in (('mm', Runner), ('ours', FlexibleRunner)):
        runner = cls.from_cfg(dict(cfg, work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}'))
        calls[name] = []

        def recorder(point, seen=calls[name], runner=runner):
            def record(hook, runner_arg, batch_idx=None, data_batch=None, outputs=None, mode='train'):
                assert runner_arg is runner
                seen.append((point, mode, batch_idx))
            return record

        # The hook empties the CUDA cache at these points (on a GPU only): record them.
        with mock.patch.object(EmptyCacheHook, '_before_epoch', recorder('before_epoch')), \
                mock.patch.object(EmptyCacheHook, '_after_iter', recorder('after_iter')), \
                mock.patch.object(EmptyCacheHook, '_after_epoch', recorder('after_epoch')):
            for method in ('train', 'val', 'test'):
                getattr(runner, method)()

    def epoch(mode, iterations):
        return [('before_epoch', mode, None), *[('after_iter', mode, i) for i in range(iterations)],
                ('after_epoch', mode, None)]

    assert calls['mm'] == 2 * (epoch('train', 6) + epoch('val', 3)) + epoch('val', 3) + epoch('test', 3)
    assert calls['ours'] == calls['mm']


def test_sync_buffers_hook_averages_rank_buffers(tmp_path):
    out = tmp_path / 'buffers.json'
    result = subprocess.run([TORCHRUN, '--nproc_per_node=2', '--master_port=29533',
                             os.path.join(HERE, 'scripts', 'sync_buffers.py'), str(out)],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=HERE, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen['world_size'] == 2 and len(seen['before']) == len(seen['after']) == 2  # two epochs
    for before, after in zip(seen['before'], seen['after']):
        before, after = torch.tensor(before), torch.tensor(after)
        assert (before[0] - before[1]).abs().max() > 1e-3  # each rank's own statistics
        torch.testing.assert_close(after[0], after[1], atol=0, rtol=0)
        torch.testing.assert_close(after[0], before.mean(0))


def test_lightning_callback_in_custom_hooks_runs_next_to_mmengine_hooks(tmp_path):
    cfg = dict(BASE, custom_hooks=[dict(type='toy.CountingCallback'), dict(type='RecordingHook')],
               work_dir=str(tmp_path), experiment_name=f'cb_{tmp_path.name}')
    runner = FlexibleRunner.from_cfg(cfg)
    runner.train()
    callback = next(c for c in runner.trainer.callbacks if type(c).__name__ == 'CountingCallback')
    assert callback.batches == 24 and callback.validations == 4
    assert [type(h).__name__ for h in runner.hooks].count('RecordingHook') == 1


def test_naive_visualization_hook(tmp_path):
    images = dict(dataset=dict(type='TinyImages', size=6), sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=4, collate_fn=dict(type='list_collate'))
    cfg = dict(model=dict(type='TinyImageModel'), test_dataloader=images, test_cfg=dict(),
               test_evaluator=dict(type='SampleCount'), visualizer=dict(type='RecordingVisualizer'),
               custom_hooks=[dict(type='NaiveVisualizationHook')])
    mm, ours = _both(cfg, tmp_path, run=('test',))
    assert ours.visualizer.drawn == mm.visualizer.drawn and len(ours.visualizer.drawn) == 6
