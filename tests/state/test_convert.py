"""Checkpoint conversion both ways: a converted checkpoint resumes exactly in the other format, and each
format is read where the other is expected, converted in memory by the same rules."""
import copy

import lightning as L
import pytest
import torch
from conftest import data
from lightning.pytorch.callbacks import ModelCheckpoint
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_checkpoint
from parity import ParityRecorder, fit_with_own_trainer

from mm_lightning import ConfigDataModule, ConfigError, ConfigModule, FlexibleRunner, load_config, trainer_kwargs
from mm_lightning.state.convert import as_lightning, as_mmengine
from mm_lightning.state.serialization import UnsafeCheckpointError
from mm_lightning.tools.cli import main

CFG = dict(
    model=dict(type='ToyClassifier', dropout=0.3, batch_norm=True),
    train_dataloader=dict(data(size=40, batch_size=4), dataset=dict(type='AugmentedBlobDataset', size=40)),
    val_dataloader=data(size=12, seed=1, shuffle=False, batch_size=4),
    val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
    test_dataloader=data(size=8, seed=2, shuffle=False, batch_size=4), test_evaluator=dict(type='ToyAccuracy'),
    test_cfg=dict(),
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
    for name, ckpt_path in (('converted', dst), ('direct', src)):  # Trainer.fit reads the .pth itself too
        module, rec = _own_trainer_fit(tmp_path, name, ckpt_path=ckpt_path)
        assert rec.iterations[0]['iter'] == 15, name
        assert rec.iterations == full_rec.iterations[15:], name
        assert rec.val_metrics == full_rec.val_metrics[1:], name
        _same_weights(full.model, module.model)


def _own_trainer_evaluate(tmp_path, name, stage, ckpt_path, **changes):
    """A Lightning user's ``Trainer.validate``/``Trainer.test`` of a ConfigModule; returns the module."""
    cfg = load_config(dict(copy.deepcopy(CFG), **changes),
                      dict(work_dir=str(tmp_path / name), experiment_name=f'{name}_{tmp_path.name}'))
    module = ConfigModule.from_config(cfg)
    getattr(L.Trainer(**trainer_kwargs(cfg)), stage)(module, datamodule=ConfigDataModule.from_config(cfg),
                                                      ckpt_path=ckpt_path, verbose=False)
    return module


def test_trainer_evaluates_a_checkpoint_of_either_format(tmp_path):
    full, _ = _runner(tmp_path, 'full', train_cfg=dict(by_epoch=True, max_epochs=1, val_interval=1))
    full.train()
    pth, later = str(tmp_path / 'full' / 'iter_5.pth'), str(tmp_path / 'full' / 'iter_10.pth')
    ckpt = str(tmp_path / 'iter_5.ckpt')
    assert main(['convert-checkpoint', pth, ckpt]) == 0
    for stage, mode in (('validate', 'val'), ('test', 'test')):
        expected = getattr(_runner(tmp_path, f'mm_{mode}', load_from=pth)[0], mode)()
        for name, path in (('pth', pth), ('ckpt', ckpt)):
            # the config's load_from is another file: the weights given to the Trainer are the ones evaluated
            module = _own_trainer_evaluate(tmp_path, f'{mode}_{name}', stage, path, load_from=later)
            assert module.metrics[mode] == expected, (stage, name)
            for key, value in torch.load(pth)['state_dict'].items():
                assert torch.equal(module.model.state_dict()[key], value), (stage, name, key)


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
    with pytest.raises(UnsafeCheckpointError, match=r'iter_25.pth: this checkpoint pickles .* '
                                                    r'`mm-lightning convert-checkpoint .*iter_25.pth OUT.pth`'):
        _own_trainer_fit(tmp_path, 'unconverted', ckpt_path=str(tmp_path / 'mm' / 'iter_25.pth'))


def test_in_memory_conversion_refuses_what_is_no_checkpoint():
    with pytest.raises(ConfigError, match=r'^w.pth: not a checkpoint \(it holds a Tensor, not a dict\)$'):
        as_mmengine(torch.zeros(1), 'w.pth')
    with pytest.raises(ConfigError, match=r"^ckpt_path: x.pth is neither a Lightning nor an mmengine checkpoint "
                                          r"\(keys: \['loss'\]\)$"):
        as_lightning({'loss': 1.0}, 'x.pth', resuming=False)


def test_a_plain_lightning_checkpoint_gives_its_model_weights():
    weights = {'model.net.0.weight': torch.ones(2), 'model.net.0.bias': torch.zeros(2)}
    plain = {'pytorch-lightning_version': '2.6.0', 'state_dict': weights, 'epoch': 0, 'global_step': 3}
    converted = as_mmengine(plain, 'plain.ckpt')
    assert list(converted) == ['state_dict'] and list(converted['state_dict']) == ['net.0.weight', 'net.0.bias']


def test_trainer_evaluates_a_file_with_weights_only_but_does_not_resume_from_it(tmp_path):
    runner, _ = _runner(tmp_path, 'init')
    weights = {key: value.clone() + 1 for key, value in runner.model.state_dict().items()}
    path = str(tmp_path / 'weights.pth')
    torch.save({'state_dict': weights}, path)
    module = _own_trainer_evaluate(tmp_path, 'val', 'validate', path)
    for key, value in weights.items():
        assert torch.equal(module.model.state_dict()[key], value), key
    with pytest.raises(ConfigError, match=r'^ckpt_path: .*weights.pth holds no meta or message_hub: it has weights '
                                          'but no run to continue; give it as load_from'):
        _own_trainer_fit(tmp_path, 'fit', ckpt_path=path)
