"""Exact from every file a run writes: each checkpoint of a real run, resumed, continues as it did.

Each case trains once, uninterrupted, keeping a copy of every checkpoint file at the moment it
was written (a file ``CheckpointHook`` writes again, such as ``epoch_N.pth`` after a new best,
or deletes, under ``max_keep_ckpts``, is kept in each version). Every copy is then resumed in a
fresh run, through each entry point, and from that file's moment on every iteration's losses
and LRs, every validation's metrics and the final weights must equal the uninterrupted run's
(atol 0: the same code on the same machine).
"""
from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List

import lightning as L
import pytest
import torch
import toy  # noqa: F401
from conftest import data
from mmengine.hooks import Hook

from mm_lightning import ConfigDataModule, ConfigModule, FlexibleRunner, load_config, trainer_kwargs
from mm_lightning.state.convert import convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, 'examples', 'spiral', 'mlp_spiral.py')


class Records(Hook):
    """Every training iteration (losses, LRs, counters) and validation (metrics), in order."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.items: List[Dict[str, Any]] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        record = {key: float(value) for key, value in outputs.items()}
        record.update({f'lr/{name}': values for name, values in runner.optim_wrapper.get_lr().items()})
        self.items.append(dict(kind='iter', iter=runner.iter, epoch=runner.epoch, batch_idx=batch_idx, **record))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.items.append(dict(kind='val', iter=runner.iter, epoch=runner.epoch, metrics=dict(metrics or {})))


@dataclass
class Written:
    """One version of a checkpoint file: its name, a copy, and how many records came before it."""

    name: str
    copy: str
    start: int


class FileArchive(Hook):
    """Copies each checkpoint file in the work_dir when it appears or changes (after the records of its stage)."""

    priority = 'LOWEST'

    def __init__(self, work_dir: str, archive: str, records: Records) -> None:
        self.work_dir, self.archive, self.records = work_dir, archive, records
        self.seen: Dict[str, tuple] = {}
        self.written: List[Written] = []

    def _capture(self) -> None:
        if not os.path.isdir(self.work_dir):
            return
        for name in sorted(os.listdir(self.work_dir)):
            path = os.path.join(self.work_dir, name)
            if not name.endswith('.pth') or not os.path.isfile(path):
                continue
            stamp = (os.stat(path).st_mtime_ns, os.path.getsize(path))
            if self.seen.get(name) != stamp:
                self.seen[name] = stamp
                kept = os.path.join(self.archive, f'{len(self.written):03d}_{name}')
                shutil.copyfile(path, kept)
                self.written.append(Written(name, kept, len(self.records.items)))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._capture()

    def after_train_epoch(self, runner) -> None:
        self._capture()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._capture()


def _weights(model) -> Dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _runner_run(cfg, work_dir: str, name: str, archive: str = None, **changes):
    cfg = copy.deepcopy(cfg)
    cfg.merge_from_dict(dict(work_dir=work_dir, experiment_name=name, **changes))
    runner = FlexibleRunner.from_cfg(cfg)
    records = Records()
    runner.register_hook(records)
    files = None
    if archive is not None:
        os.makedirs(archive, exist_ok=True)
        files = FileArchive(work_dir, archive, records)
        runner.register_hook(files)
    runner.train()
    return records.items, _weights(runner.model), files


def _own_trainer_run(cfg, work_dir: str, name: str, ckpt_path: str):
    cfg = load_config(copy.deepcopy(cfg), dict(work_dir=work_dir, experiment_name=name))
    module = ConfigModule.from_config(cfg)
    records = Records()
    module.runner.register_hook(records)
    L.Trainer(**dict(trainer_kwargs(cfg), enable_checkpointing=False)).fit(
        module, datamodule=ConfigDataModule.from_config(cfg), ckpt_path=ckpt_path)
    return records.items, _weights(module.model)


def _assert_continues(full, resumed, start: int, where: str) -> None:
    full_records, full_weights = full
    records, weights = resumed
    assert records == full_records[start:], where
    assert weights.keys() == full_weights.keys()
    for key, value in full_weights.items():
        assert torch.equal(weights[key], value), f'{where}: {key}'


def _toy_cfg(**changes):
    cfg = dict(
        model=dict(type='ToyClassifier', dropout=0.3, batch_norm=True),
        train_dataloader=data(size=24, batch_size=4),
        val_dataloader=data(size=12, seed=1, shuffle=False, batch_size=4),
        val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.02)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=8),
                         dict(type='MultiStepLR', milestones=[3], by_epoch=True)],
        train_cfg=dict(by_epoch=True, max_epochs=5, val_interval=2),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=3))
    cfg.update(changes)
    return load_config(cfg)


CASES = {
    # The README's example: best checkpoints, interval 5 with max_keep_ckpts 2, validation every 2 epochs.
    # (6 epochs over a third of its points, to keep the test short).
    'example': lambda: load_config(EXAMPLE, dict(
        train_cfg=dict(max_epochs=6), train_dataloader=dict(dataset=dict(points_per_arm=100)),
        val_dataloader=dict(dataset=dict(points_per_arm=100)))),
    # Epoch-based: interval 2, save_best (rewrites the interval file after a new best), save_last, keep 2.
    'epoch_best_last': lambda: _toy_cfg(default_hooks=dict(
        logger=dict(type='LoggerHook', interval=1),
        checkpoint=dict(type='CheckpointHook', interval=2, save_best='toy/accuracy', rule='greater', save_last=True,
                        max_keep_ckpts=2))),
    # Epoch-based run, checkpoints by iteration (mid-epoch and at epoch ends), best by iteration.
    'epoch_iter_intervals': lambda: _toy_cfg(default_hooks=dict(
        logger=dict(type='LoggerHook', interval=1),
        checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False, save_best='auto', max_keep_ckpts=3))),
    # Iteration-based, validation every 5 iterations, checkpoints every 3.
    'iter_based': lambda: _toy_cfg(
        param_scheduler=[dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=6),
                         dict(type='CosineAnnealingLR', by_epoch=False, begin=6, T_max=12)],
        train_cfg=dict(by_epoch=False, max_iters=16, val_interval=5),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False, save_best='toy/accuracy',
                                           rule='greater', max_keep_ckpts=2))),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_every_file_resumes_exactly_through_each_entry_point(tmp_path, case):
    cfg = CASES[case]()
    work_dir = str(tmp_path / 'full')
    *full, files = _runner_run(cfg, work_dir, f'full_{tmp_path.name}', archive=str(tmp_path / 'archive'))
    full = tuple(full)
    assert len(files.written) >= 4, [w.name for w in files.written]
    names = {w.name for w in files.written}
    assert any(name.startswith('best_') for name in names), names

    for index, written in enumerate(files.written):
        where = f'{case}: {written.name} (version {index}, after {written.start} records)'
        if written.start == len(full[0]):
            continue  # written at the run's very end: nothing left to continue (see the extension test)
        resumed = _runner_run(cfg, str(tmp_path / f'pth_{index}'), f'pth_{index}_{tmp_path.name}',
                              resume=written.copy)[:2]
        _assert_continues(full, resumed, written.start, f'{where}, resume=PATH')

        lightning_file = str(tmp_path / f'{index}.ckpt')
        convert(written.copy, lightning_file)
        resumed = _own_trainer_run(cfg, str(tmp_path / f'ckpt_{index}'), f'ckpt_{index}_{tmp_path.name}',
                                   lightning_file)
        _assert_continues(full, resumed, written.start, f'{where}, converted, Trainer.fit(ckpt_path)')


def test_extending_a_finished_run_continues_as_the_longer_run(tmp_path):
    """A finished 4-epoch run resumed with max_epochs=6 trains epochs 5 and 6 as a 6-epoch run does."""
    hooks = dict(logger=dict(type='LoggerHook', interval=1),
                 checkpoint=dict(type='CheckpointHook', interval=2, save_best='toy/accuracy', rule='greater'))
    short = _toy_cfg(default_hooks=hooks, train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=2))
    longer = _toy_cfg(default_hooks=hooks, train_cfg=dict(by_epoch=True, max_epochs=6, val_interval=2))
    work_dir = str(tmp_path / 'short')
    _runner_run(short, work_dir, f'short_{tmp_path.name}')
    full_records, full_weights, _ = _runner_run(longer, str(tmp_path / 'long'), f'long_{tmp_path.name}')
    start = next(i for i, r in enumerate(full_records) if r['kind'] == 'iter' and r['epoch'] == 4)
    extended = _runner_run(longer, work_dir, f'extended_{tmp_path.name}', resume=True)[:2]
    _assert_continues((full_records, full_weights), extended, start, 'resume=True with max_epochs 4 -> 6')
