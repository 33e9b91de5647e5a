"""ConfigModule / ConfigDataModule with a Trainer that a Lightning user builds."""
import copy
import logging

import lightning as L
import pytest
import torch
from conftest import data
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from mmengine.runner import Runner
from parity import ParityRecorder, fit_with_own_trainer, run, unique_name

from mm_lightning import ConfigDataModule, ConfigModule, load_config, trainer_kwargs

CFG = dict(
    model=dict(type='ToyClassifier', batch_norm=True),
    train_dataloader=data(size=40, batch_size=8),
    val_dataloader=data(size=12, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
    param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
                     dict(type='MultiStepLR', milestones=[2], by_epoch=True)],
    train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=2),
    randomness=dict(seed=4))


class CountingCallback(Callback):
    def __init__(self):
        self.validations = 0

    def on_validation_end(self, trainer, pl_module):
        self.validations += 1


def test_own_trainer_with_callbacks_and_logger_matches_mmengine(tmp_path):
    reference = run(Runner, CFG, str(tmp_path / 'mm'), unique_name('mm'))

    cfg = load_config(CFG, dict(work_dir=str(tmp_path / 'ours'), experiment_name=f'own_{tmp_path.name}'))
    module = ConfigModule.from_config(cfg)
    recorder = ParityRecorder()
    module.runner.register_hook(recorder)
    counter = CountingCallback()
    kwargs = trainer_kwargs(cfg, logger=CSVLogger(str(tmp_path / 'csv'), name='run'))
    kwargs['callbacks'].append(counter)
    trainer = L.Trainer(**kwargs)
    trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))

    assert [r['loss'] for r in recorder.iterations] == [r['loss'] for r in reference.iterations]
    assert recorder.val_metrics == reference.val_metrics and counter.validations == 2  # epochs 2 and 3
    for key, value in reference.weights.items():
        torch.testing.assert_close(module.model.state_dict()[key], value, atol=1e-6, rtol=0)
    assert float(trainer.callback_metrics['toy/accuracy']) == pytest.approx(reference.val_metrics[-1]['toy/accuracy'])
    with open(tmp_path / 'csv' / 'run' / 'version_0' / 'metrics.csv') as f:
        assert 'toy/accuracy' in f.readline()


def test_plain_trainer_still_follows_the_config(tmp_path):
    """No trainer_kwargs, max_epochs unset (Lightning's 1000): the hook bridge keeps mmengine's loop length
    and cadence."""
    cfg = load_config(CFG, dict(work_dir=str(tmp_path), experiment_name=f'plain_{tmp_path.name}'))
    module = ConfigModule.from_config(cfg)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))
    assert module.runner.epoch == 3 and trainer.current_epoch == 3
    assert len(module.runner.message_hub.get_scalar('val/toy/accuracy').data[0]) == 2


def test_a_later_stage_on_the_same_trainer_keeps_its_hook_bridge(tmp_path):
    """``validate`` after ``fit`` on one Trainer: the bridge already among its callbacks stays, without Lightning's
    "configure_callbacks will override existing callbacks" line."""
    cfg = load_config(CFG, dict(work_dir=str(tmp_path), experiment_name=f'again_{tmp_path.name}'))
    module, datamodule = ConfigModule.from_config(cfg), ConfigDataModule.from_config(cfg)
    trainer = L.Trainer(**trainer_kwargs(cfg))
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    rank_zero = logging.getLogger('lightning.pytorch.utilities.rank_zero')
    rank_zero.addHandler(handler)
    try:
        trainer.fit(module, datamodule=datamodule)
        trainer.validate(module, datamodule=datamodule)
    finally:
        rank_zero.removeHandler(handler)
    assert not [line for line in lines if 'configure_callbacks' in line], lines
    assert [type(c).__name__ for c in trainer.callbacks].count('HookBridge') == 1


def test_datamodule_builds_loaders_with_mmengine():
    dm = ConfigDataModule.from_config(copy.deepcopy(CFG))
    dm.setup('fit')
    loader = dm.loader('train')
    assert type(loader.sampler).__name__ == 'DefaultSampler' and loader.sampler.seed == 4
    assert dm.train_dataloader().loader is loader  # Lightning iterates the same loader, behind a stream
    assert dm.test_dataloader() == []


RESUME_CFG = dict(
    CFG, model=dict(type='ToyClassifier', batch_norm=True, dropout=0.3),
    train_dataloader=dict(data(size=40, batch_size=4), dataset=dict(type='AugmentedBlobDataset', size=40)),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9), accumulative_counts=2),
    train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=1),
    default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100)))


def _fit_with_own_trainer(tmp_path, name, ckpt_path=None, callbacks=()):
    return fit_with_own_trainer(RESUME_CFG, tmp_path, name, ckpt_path, callbacks)


def test_model_checkpoint_resume_with_own_trainer_is_exact(tmp_path):
    """ModelCheckpoint every 7 steps and every epoch; fit(ckpt_path=...) from each continues exactly."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    ckpt_dir = str(tmp_path / 'ckpts')
    every_steps = ModelCheckpoint(dirpath=ckpt_dir, filename='step{step}', every_n_train_steps=9,
                                  save_top_k=-1, auto_insert_metric_name=False)
    every_epoch = ModelCheckpoint(dirpath=ckpt_dir, filename='epoch{epoch}', every_n_epochs=1, save_top_k=-1,
                                  auto_insert_metric_name=False)
    full, full_rec = _fit_with_own_trainer(tmp_path, 'full', callbacks=(every_steps, every_epoch))
    assert full.runner.epoch == 4 and full.runner.iter == 40

    # step 9 = iteration 18: inside the second epoch and inside an accumulation window (steps count
    # optimizer steps, one every two iterations); epoch0.ckpt: after the first epoch and its validation
    for name, first_iter, validations_done in (('step9.ckpt', 18, 1), ('epoch0.ckpt', 10, 1)):
        resumed, rec = _fit_with_own_trainer(tmp_path, f'from_{name}', ckpt_path=f'{ckpt_dir}/{name}')
        assert rec.iterations[0]['iter'] == first_iter, name
        assert rec.iterations == full_rec.iterations[first_iter:], name
        assert rec.val_metrics == full_rec.val_metrics[validations_done:], name
        assert (resumed.runner.epoch, resumed.runner.iter) == (4, 40)
        assert resumed.trainer.global_step == full.trainer.global_step
        for key, value in full.model.state_dict().items():
            assert torch.equal(resumed.model.state_dict()[key], value), (name, key)


def test_from_config_writes_nothing_until_the_trainer_starts(tmp_path):
    cfg = load_config(CFG, dict(work_dir=str(tmp_path / 'work'), experiment_name=f'lazy_{tmp_path.name}'))
    module = ConfigModule.from_config(cfg)
    assert not (tmp_path / 'work').exists()
    with pytest.raises(RuntimeError, match='not attached to a Trainer'):
        module.runner.trainer
    trainer = L.Trainer(**trainer_kwargs(cfg))
    trainer.fit(module, datamodule=ConfigDataModule.from_config(cfg))
    assert module.runner.trainer is trainer
    assert module.runner.train_dataloader is trainer.datamodule.loader('train')
    assert (tmp_path / 'work' / f'{module.runner.timestamp}.py').exists()


def test_predict_returns_the_models_test_step_outputs_over_the_test_loader_in_order(tmp_path):
    cfg = load_config(dict(CFG, test_dataloader=data(size=10, seed=2, shuffle=False, batch_size=4),
                           test_evaluator=dict(type='ToyAccuracy'), test_cfg=dict()),
                      dict(work_dir=str(tmp_path), experiment_name=f'predict_{tmp_path.name}'))
    module = ConfigModule.from_config(cfg)
    datamodule = ConfigDataModule.from_config(cfg)
    trainer = L.Trainer(**dict(trainer_kwargs(cfg), logger=False))
    predicted = trainer.predict(module, datamodule=datamodule)

    module.model.eval()
    with torch.no_grad():
        expected = [module.model.test_step(batch) for batch in datamodule.loader('test')]
    assert len(predicted) == 3  # batches of 4, 4 and 2
    assert [[(int(s['pred']), s['index']) for s in batch] for batch in predicted] == \
        [[(int(s['pred']), s['index']) for s in batch] for batch in expected]
    assert [s['index'] for batch in predicted for s in batch] == list(range(10))
