"""FlexibleRunner: mmengine's lazy construction, standalone evaluation, resume before train()."""
import copy
import inspect

import pytest
from conftest import data
from mmengine.hooks import Hook
from mmengine.registry import DATASETS
from torch.utils.data import Dataset

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.runtime.assembly import CONFIG_KEYWORDS


@DATASETS.register_module(force=True)
class MissingFilesDataset(Dataset):
    """A dataset whose files are not on this machine: building it fails, as a real one does."""

    def __init__(self, ann_file: str) -> None:
        raise FileNotFoundError(f'{ann_file} does not exist')


TRAIN_ELSEWHERE = dict(
    model=dict(type='ToyClassifier'), randomness=dict(seed=0),
    train_dataloader=dict(dataset=dict(type='MissingFilesDataset', ann_file='/data/train.json'),
                          sampler=dict(type='DefaultSampler', shuffle=True), batch_size=4),
    train_cfg=dict(by_epoch=True, max_epochs=2), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
    param_scheduler=dict(type='MultiStepLR', milestones=[1]),
    test_dataloader=data(size=60, seed=1, shuffle=False, batch_size=4), test_cfg=dict(),
    test_evaluator=dict(type='ToyAccuracy'),
    val_dataloader=data(size=60, seed=1, shuffle=False, batch_size=4), val_cfg=dict(),
    val_evaluator=dict(type='ToyAccuracy'),
    default_hooks=dict(logger=dict(type='LoggerHook', interval=5)))


def _runner(tmp_path, cfg):
    return FlexibleRunner.from_cfg(dict(copy.deepcopy(cfg), work_dir=str(tmp_path),
                                        experiment_name=f'runner_{tmp_path.name}'))


def test_test_and_val_build_nothing_of_training(tmp_path):
    """OpenMMLab's tools/test.py on a machine holding only the test data: the training dataset, sampler,
    optimizer and schedulers are never built (mmengine's LoggerHook and LogProcessor read runner._train_loop,
    which stays train_cfg, as under mmengine)."""
    runner = _runner(tmp_path, TRAIN_ELSEWHERE)
    assert runner.test()['toy/count'] == 60  # 15 batches: LoggerHook logs test iterations
    assert runner.val()['toy/count'] == 60
    assert runner._train_loop == TRAIN_ELSEWHERE['train_cfg'] and runner.module.train_loop is None
    assert runner.optim_wrapper == TRAIN_ELSEWHERE['optim_wrapper']
    assert runner.param_schedulers == TRAIN_ELSEWHERE['param_scheduler']


class SchedulerStates(Hook):
    """Records the schedulers' states at the end of one epoch (after they stepped)."""

    priority = 'LOWEST'

    def __init__(self, states, after_epoch):
        self.states, self.after_epoch = states, after_epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.after_epoch:
            self.states.extend(copy.deepcopy(s.state_dict()) for s in runner.param_schedulers)


TRAINING = dict(
    model=dict(type='ToyClassifier', dropout=0.2), randomness=dict(seed=0),
    train_dataloader=data(size=24, batch_size=4), train_cfg=dict(by_epoch=True, max_epochs=4),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
    param_scheduler=dict(type='MultiStepLR', milestones=[1, 3]))


def test_resume_and_load_checkpoint_before_train(tmp_path):
    """As with mmengine's Runner: runner.resume(path) before train() builds the loop, optim wrapper and
    schedulers and restores them; train() then continues where the checkpoint was taken."""
    full = _runner(tmp_path / 'full', TRAINING)
    schedulers = []
    full.register_hook(SchedulerStates(schedulers, after_epoch=2))
    full.train()
    checkpoint = str(tmp_path / 'full' / 'epoch_2.pth')

    loaded = _runner(tmp_path / 'loaded', TRAINING)
    loaded.load_checkpoint(checkpoint)
    assert loaded._has_loaded and (loaded.epoch, loaded.iter) == (0, 0)
    assert isinstance(loaded.optim_wrapper, dict)  # weights only: nothing of the optimization is built

    resumed = _runner(tmp_path / 'resumed', TRAINING)
    resumed.resume(checkpoint)
    assert (resumed.epoch, resumed.iter) == (2, 12) and resumed._has_loaded
    assert resumed.optim_wrapper.get_lr()['lr'] == [0.1 * 0.1]  # one milestone passed
    assert resumed.param_schedulers[0].state_dict() == schedulers[0]
    resumed.train()
    assert (resumed.epoch, resumed.iter) == (4, 24)
    for key, value in full.model.state_dict().items():
        assert value.equal(resumed.model.state_dict()[key]), key


def test_resume_before_train_under_a_sharding_strategy_is_refused_by_name(tmp_path):
    """Building the optimizer before the strategy shards the model would be silently wrong."""
    full = _runner(tmp_path / 'full', dict(TRAINING, train_cfg=dict(by_epoch=True, max_epochs=1)))
    full.train()
    sharded = _runner(tmp_path / 'sharded', dict(TRAINING, strategy=dict(type='FSDPStrategy')))
    with pytest.raises(ConfigError, match=r'^strategy: resume\(\) before train\(\) would build the optimizer'):
        sharded.resume(str(tmp_path / 'full' / 'epoch_1.pth'))


def test_the_constructor_takes_mmengines_keywords_and_the_spec_table_names_them():
    """``FlexibleRunner.__init__`` passes its keywords on as they are: they must be the spec table's, with
    mmengine's FlexibleRunner's names, and no other."""
    from mmengine.runner import FlexibleRunner as MMEngineFlexibleRunner
    ours = list(inspect.signature(FlexibleRunner.__init__).parameters)[1:]
    assert ours == ['model', *CONFIG_KEYWORDS, 'cfg']
    assert set(ours) == set(list(inspect.signature(MMEngineFlexibleRunner.__init__).parameters)[1:])
