"""mmengine-format checkpoints: safe to load, readable by mmengine, resumable."""
import copy

import pytest
import torch
from conftest import data
from lightning.pytorch.callbacks import ModelCheckpoint
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from parity import ParityRecorder, fit_with_own_trainer

from mm_lightning import FlexibleRunner
from mm_lightning.state.serialization import UnsafeCheckpointError, from_safe, to_safe
from mm_lightning.state.serialization import make_safe as convert_checkpoint
from mm_lightning.tools.cli import main

CFG = dict(
    model=dict(type='ToyClassifier', batch_norm=True),
    train_dataloader=data(size=40, batch_size=8),
    val_dataloader=data(size=16, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
    test_dataloader=data(size=16, seed=2, shuffle=False), test_evaluator=dict(type='ToyAccuracy'), test_cfg=dict(),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
    param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
                     dict(type='MultiStepLR', milestones=[2], by_epoch=True, end=4)],
    train_cfg=dict(by_epoch=True, max_epochs=4),
    default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
    randomness=dict(seed=9))


def _runner(tmp_path, name, **changes):
    cfg = copy.deepcopy(CFG)
    cfg.update(work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}', **changes)
    runner = FlexibleRunner.from_cfg(cfg)
    recorder = ParityRecorder()
    runner.register_hook(recorder)
    return runner, recorder


def test_checkpoint_contents_match_mmengine(tmp_path):
    runner, _ = _runner(tmp_path, 'a')
    runner.train()
    ours = torch.load(tmp_path / 'a' / 'epoch_4.pth', weights_only=True)  # no pickled classes
    cfg = dict(copy.deepcopy(CFG), work_dir=str(tmp_path / 'mm'), experiment_name=f'mmc_{tmp_path.name}')
    Runner.from_cfg(cfg).train()
    convert_checkpoint(str(tmp_path / 'mm' / 'epoch_4.pth'), str(tmp_path / 'reference.pth'))
    reference = from_safe(torch.load(tmp_path / 'reference.pth', weights_only=True))
    assert reference.keys() == {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'}
    assert ours.keys() == reference.keys() | {'mm_lightning'}  # progress, data position, random state
    assert 'experiment_name' in ours['meta'] and 'model = dict(' in ours['meta']['cfg']
    for key in ('epoch', 'iter', 'seed', 'dataset_meta'):
        assert ours['meta'][key] == reference['meta'][key], key
    assert ours['meta']['epoch'] == 4 and ours['meta']['iter'] == 20
    torch.testing.assert_close(ours['state_dict'], reference['state_dict'], atol=1e-6, rtol=0)
    torch.testing.assert_close(ours['optimizer'], reference['optimizer'], atol=1e-6, rtol=0)
    assert ours['param_schedulers'] == reference['param_schedulers']
    hub = from_safe(ours['message_hub'])
    assert hub['runtime_info'].keys() == reference['message_hub']['runtime_info'].keys()
    assert hub['log_scalars'].keys() == reference['message_hub']['log_scalars'].keys()
    for key, buffer in reference['message_hub']['log_scalars'].items():
        if key.endswith('time'):
            continue
        assert abs(hub['log_scalars'][key].mean() - buffer.mean()) < 1e-6, key


def test_mmengine_runner_loads_our_checkpoint(tmp_path):
    runner, _ = _runner(tmp_path, 'ours')
    runner.train()
    ours = runner.test()
    cfg = copy.deepcopy(CFG)
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg.pop(key)
    cfg.update(work_dir=str(tmp_path / 'mm'), experiment_name=f'mm_{tmp_path.name}',
               load_from=str(tmp_path / 'ours' / 'epoch_4.pth'))
    assert Runner.from_cfg(cfg).test() == ours


def test_resume_continues_exactly(tmp_path):
    full, full_rec = _runner(tmp_path, 'full')
    full.train()
    resumed, resumed_rec = _runner(tmp_path, 'resumed', resume=str(tmp_path / 'full' / 'epoch_2.pth'))
    resumed.train()
    assert resumed_rec.iterations[0]['epoch'] == 2 and resumed_rec.iterations[0]['iter'] == 10
    assert resumed_rec.iterations == full_rec.iterations[10:]
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, atol=0, rtol=0)
    assert resumed.message_hub.get_info('epoch') == 3


def test_resume_true_takes_latest_in_work_dir(tmp_path):
    first, _ = _runner(tmp_path, 'w', train_cfg=dict(by_epoch=True, max_epochs=2))
    first.train()
    second, rec = _runner(tmp_path, 'w', resume=True)
    second.train()
    assert [r['epoch'] for r in rec.iterations][::5] == [2, 3]


def test_iteration_based_resume_skips_trained_batches(tmp_path):
    changes = dict(train_dataloader=data(size=30, batch_size=4, sampler='InfiniteSampler'),
                   train_cfg=dict(by_epoch=False, max_iters=14, val_interval=5),
                   param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
                   default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=6, by_epoch=False)))
    full, full_rec = _runner(tmp_path, 'full', **changes)
    full.train()
    resumed, resumed_rec = _runner(tmp_path, 'res', resume=str(tmp_path / 'full' / 'iter_6.pth'), **changes)
    resumed.train()
    assert resumed_rec.iterations == full_rec.iterations[6:]
    assert resumed_rec.val_metrics == full_rec.val_metrics[1:]
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, atol=0, rtol=0)


def test_safe_form_round_trip():
    buffer = HistoryBuffer([1.0, 2.5], [1, 2])
    state = {'log_scalars': {'train/loss': buffer}, 'runtime_info': {'palette': __import__('numpy').eye(2)}}
    restored = from_safe(to_safe(state))
    assert isinstance(restored['log_scalars']['train/loss'], HistoryBuffer)
    assert restored['log_scalars']['train/loss'].mean() == buffer.mean()
    assert (restored['runtime_info']['palette'] == state['runtime_info']['palette']).all()


def test_mmengine_written_checkpoint_needs_explicit_conversion(tmp_path):
    cfg = copy.deepcopy(CFG)
    cfg.update(work_dir=str(tmp_path / 'mm'), experiment_name=f'mmw_{tmp_path.name}')
    mm = Runner.from_cfg(cfg)
    mm.train()  # mmengine pickles HistoryBuffer objects into its files
    written = str(tmp_path / 'mm' / 'epoch_4.pth')
    runner, _ = _runner(tmp_path, 'refuse', load_from=written)
    with pytest.raises(UnsafeCheckpointError, match='convert-checkpoint'):
        runner.test()
    assert main(['convert-checkpoint', written, str(tmp_path / 'safe.pth')]) == 0
    runner, _ = _runner(tmp_path, 'load', load_from=str(tmp_path / 'safe.pth'))
    assert runner.test() == mm.test()


def test_missing_load_from(tmp_path):
    from mm_lightning import ConfigError
    runner, _ = _runner(tmp_path, 'x', load_from=str(tmp_path / 'none.pth'))
    with pytest.raises(ConfigError, match='load_from: checkpoint file not found'):
        runner.test()


def test_lightning_checkpoints_work_where_mmengine_checkpoints_do(tmp_path):
    """A ModelCheckpoint file given to load_from, resume=PATH, runner.resume and runner.load_checkpoint."""
    every_7 = ModelCheckpoint(dirpath=str(tmp_path / 'ckpts'), filename='step{step}', every_n_train_steps=7,
                              save_top_k=-1, auto_insert_metric_name=False)
    latest = ModelCheckpoint(dirpath=str(tmp_path / 'ckpts'), filename='last_epoch', every_n_epochs=1)
    full, full_rec = fit_with_own_trainer(CFG, tmp_path, 'full', callbacks=[every_7, latest])
    step14, last = str(tmp_path / 'ckpts' / 'step14.ckpt'), latest.best_model_path  # the newest
    assert _runner(tmp_path, 'ckpt', load_from=last)[0].test() == \
        _runner(tmp_path, 'pth', load_from=str(tmp_path / 'full' / 'epoch_4.pth'))[0].test()
    resumed, rec = _runner(tmp_path, 'resume_path', resume=step14)
    resumed.train()
    explicit, explicit_rec = _runner(tmp_path, 'resume_call')
    explicit.resume(step14)
    explicit.train()
    for run, record in ((resumed, rec), (explicit, explicit_rec)):
        assert record.iterations[0]['iter'] == 14
        assert record.iterations == full_rec.iterations[14:]  # as Trainer.fit(ckpt_path=step14) continues
        for key, value in full.model.state_dict().items():
            assert torch.equal(run.model.state_dict()[key], value), key
    loaded, _ = _runner(tmp_path, 'load')
    loaded.load_checkpoint(last)
    for key, value in full.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_a_file_with_weights_only_is_refused_by_resume(tmp_path):
    from mm_lightning import ConfigError
    weights = {'state_dict': FlexibleRunner.from_cfg(dict(copy.deepcopy(CFG), work_dir=str(tmp_path / 'w'),
                                                          experiment_name=f'w_{tmp_path.name}')).model.state_dict()}
    plain = dict(weights, **{'pytorch-lightning_version': '2.6.0', 'epoch': 0, 'global_step': 0})
    plain['state_dict'] = {f'model.{key}': value for key, value in weights['state_dict'].items()}
    for name, checkpoint in (('weights.pth', weights), ('plain.ckpt', plain)):
        torch.save(checkpoint, tmp_path / name)
        runner, _ = _runner(tmp_path, f'run_{name}', resume=str(tmp_path / name))
        with pytest.raises(ConfigError, match=rf'^resume: .*{name} holds no meta or message_hub: it has weights '
                                              'but no run to continue; give it as load_from'):
            runner.train()
