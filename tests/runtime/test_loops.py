"""mmengine's loops on Lightning: its own loop objects, the validation rule, progress state for checkpoints."""
import copy

import pytest
from conftest import data
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner import Runner as MMRunner

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.runtime.loaders import build_dataloader
from mm_lightning.runtime.loops import (
    TrainProgress,
    ValidationRule,
    build_train_loop,
    parse_eval_cfg,
    parse_train_cfg,
    validation_settings,
)


class Runner:
    """What mmengine's loop constructors read from a runner."""

    class visualizer:
        dataset_meta = None


def _loop(dataloader_batches=5, **train_cfg):
    loader = build_dataloader(data(size=dataloader_batches * 4, batch_size=4), 'train_dataloader', seed=0)
    return TrainProgress(build_train_loop(train_cfg, Runner(), loader), has_validation=True)


class EveryThirdEpoch(EpochBasedTrainLoop):
    """A loop class with a validation default of its own."""

    def __init__(self, runner, dataloader, max_epochs, val_interval=3, **kwargs):
        super().__init__(runner, dataloader, max_epochs, val_interval=val_interval, **kwargs)


@pytest.mark.parametrize('train_cfg', [
    dict(by_epoch=True, max_epochs=4), dict(by_epoch=False, max_iters=9), dict(type=EveryThirdEpoch, max_epochs=6),
    dict(type='EpochBasedTrainLoop', max_epochs=6, val_begin=2, val_interval=2, dynamic_intervals=[(4, 1)])])
def test_validation_settings_read_from_a_config_are_the_built_loops(train_cfg):
    """explain reads a schedule from the config without building the loop: it must be the built loop's."""
    settings = validation_settings(train_cfg)
    progress = _loop(**copy.deepcopy(train_cfg))
    assert (settings['val_begin'], settings['val_interval']) == (progress.loop.val_begin, progress.loop.val_interval)
    assert ValidationRule.of(**settings) == progress.rule


def test_parse_train_cfg_forms_and_errors():
    assert parse_train_cfg(dict(type='EpochBasedTrainLoop', max_epochs=3))['by_epoch'] is True
    assert parse_train_cfg(dict(type='mmengine.runner.IterBasedTrainLoop', max_iters=3))['by_epoch'] is False
    for cfg, message in [(dict(max_epochs=3), 'set `by_epoch`'), (dict(by_epoch=True), '`max_epochs` is required'),
                         (dict(by_epoch=True, max_epochs=2.5), 'train_cfg.max_epochs'),
                         (dict(by_epoch=True, max_epochs=2, max_iters=3),
                          "train_cfg.max_iters: EpochBasedTrainLoop takes no argument 'max_iters'"),
                         (dict(by_epoch=True, max_epochss=2),
                          r"train_cfg.max_epochss: .*; did you mean 'max_epochs'\?"),
                         (dict(type='EpochBasedTrainLoop', by_epoch=True, max_epochs=1), 'Only one of')]:
        with pytest.raises(ConfigError, match=message):
            parse_train_cfg(cfg)
    from mmengine.runner import TestLoop, ValLoop
    assert parse_eval_cfg(dict(type='ValLoop', fp16=True), 'val_cfg') == dict(type=ValLoop, fp16=True)
    assert parse_eval_cfg(dict(), 'test_cfg') == dict(type=TestLoop)
    with pytest.raises(ConfigError, match=r"val_cfg.evaluate_every: ValLoop takes no argument 'evaluate_every' "
                                          r'\(it takes fp16\)$'):
        parse_eval_cfg(dict(evaluate_every=2), 'val_cfg')
    with pytest.raises(TypeError, match=r"test_cfg.fp61: TestLoop takes no argument 'fp61' \(it takes fp16\); "
                                        r"did you mean 'fp16'\?"):
        parse_eval_cfg(dict(fp61=True), 'test_cfg')


@pytest.mark.parametrize('train_cfg, due', [
    (dict(by_epoch=True, max_epochs=6, val_interval=2), [2, 4, 6]),
    (dict(by_epoch=True, max_epochs=5, val_interval=2, val_begin=3), [4, 5]),  # and always the last epoch
    # mmengine picks the interval for epoch + 1: the new interval already applies after epoch 2
    (dict(by_epoch=True, max_epochs=6, val_interval=3, dynamic_intervals=[(3, 1)]), [2, 3, 4, 5, 6]),
    (dict(by_epoch=False, max_iters=10, val_interval=4), [4, 8, 10]),
])
def test_validation_rule_is_mmengines(train_cfg, due):
    loop = _loop(**train_cfg)
    points = []
    for _ in range(loop.max_epochs if loop.by_epoch else loop.max_iters):
        if loop.by_epoch:
            loop.epoch_done()
        else:
            loop.iteration_done()
        if loop.validation_due():
            points.append(loop.epoch if loop.by_epoch else loop.iter)
    assert points == due


def test_explain_reads_the_same_rule_without_a_loop():
    assert ValidationRule.of(1, 3, [(3, 1)]).points(6) == [2, 3, 4, 5, 6]
    assert ValidationRule.of(1, 3, [[3, 1]]).points(6) == [2, 3, 4, 5, 6]  # pairs from a JSON config


def test_progress_drives_mmengines_own_loop_object():
    progress = _loop(dataloader_batches=5, by_epoch=True, max_epochs=3)
    assert type(progress.loop) is EpochBasedTrainLoop and progress.by_epoch
    assert (progress.max_epochs, progress.max_iters) == (3, 15)
    for _ in range(3):
        progress.epoch_done()
    assert progress.finished and progress.loop.epoch == 3  # the loop's own counter
    stopped = _loop(by_epoch=False, max_iters=10)
    assert type(stopped.loop) is IterBasedTrainLoop and not stopped.by_epoch
    stopped.loop.stop_training = True  # as mmengine's EarlyStoppingHook sets it
    assert stopped.finished


def test_snapshot_describes_the_point_after_the_running_iteration_or_epoch():
    loop = _loop(by_epoch=False, max_iters=10, val_interval=4)
    for _ in range(3):
        loop.iteration_done()
    with loop.ending_hooks('iteration'):  # inside after_train_iter of the 4th iteration
        after = loop.snapshot()
    assert (after['iter'], after['validation_pending']) == (4, True)
    assert loop.iter == 3  # the loop itself has not moved
    epochs = _loop(by_epoch=True, max_epochs=4, val_interval=2)
    epochs.epoch_done()
    with epochs.ending_hooks('epoch'):
        assert epochs.snapshot()['epoch'] == 2 and epochs.snapshot()['validation_pending']


def test_snapshot_outside_the_ending_hooks_is_the_state_as_it_stands():
    """A best checkpoint is written in after_val_epoch, once the epoch has been counted: the file says so."""
    epochs = _loop(by_epoch=True, max_epochs=8, val_interval=2)
    epochs.epoch_done()
    epochs.epoch_done()
    assert epochs.snapshot() == epochs.state_dict() and epochs.snapshot()['epoch'] == 2
    assert epochs.ending is None


def test_state_round_trip_keeps_the_configured_lengths():
    loop = _loop(by_epoch=True, max_epochs=4)
    loop.epoch_done()
    loop.iteration_done()
    loop.validation_pending = True
    state = loop.state_dict()
    longer = _loop(by_epoch=True, max_epochs=8)  # a resumed run may be given more epochs
    longer.load_state_dict(state)
    assert (longer.epoch, longer.iter, longer.validation_pending, longer.max_epochs) == (1, 1, True, 8)


def test_state_from_meta_of_mmengine_written_checkpoints():
    loop = _loop(dataloader_batches=5, by_epoch=True, max_epochs=4, val_interval=1)
    assert loop.state_from_meta(2, 10)['validation_pending'] is True  # saved at an epoch end, before validation
    assert loop.state_from_meta(2, 12)['validation_pending'] is False  # saved inside epoch 3


CUSTOM = dict(model=dict(type='ToyClassifier'), train_dataloader=data(size=16, batch_size=4),
              val_dataloader=data(size=10, seed=1, shuffle=False, batch_size=4),
              val_evaluator=dict(type='ToyAccuracy'), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
              train_cfg=dict(by_epoch=True, max_epochs=2), randomness=dict(seed=0),
              default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=10)),
              custom_hooks=[dict(type='RecordingHook')])


def _events(runner):
    return next(h for h in runner.hooks if type(h).__name__ == 'RecordingHook').events


@pytest.mark.parametrize('val_cfg', [dict(type='CountingValLoop'), dict(type='TwiceValLoop')],
                         ids=['own-run_iter', 'own-run'])
def test_custom_validation_loops_match_mmengine(tmp_path, val_cfg):
    from parity import assert_same_run, run_both
    reference, ours = run_both(dict(CUSTOM, val_cfg=val_cfg), tmp_path)
    assert_same_run(reference, ours, atol=0)
    assert _events(ours.runner) == _events(reference.runner)  # every hook once, in mmengine's order
    if val_cfg['type'] == 'CountingValLoop':
        assert ours.runner.message_hub.get_scalar('val/batches_seen').current() == 3
    else:
        assert set(ours.val_metrics[0]) == {'first/toy/accuracy', 'first/toy/count', 'first/toy/index_sum',
                                            'second/toy/accuracy', 'second/toy/count', 'second/toy/index_sum'}
        assert ours.val_metrics[0]['second/toy/count'] == 10  # the evaluator restarts after each evaluate


def test_a_training_loop_subclass_that_keeps_the_iteration_runs(tmp_path):
    from parity import assert_same_run, run_both
    assert parse_train_cfg(dict(type='NamedEpochLoop', max_epochs=2))['by_epoch'] is True
    reference, ours = run_both(dict(CUSTOM, train_cfg=dict(type='NamedEpochLoop', max_epochs=2), val_cfg=dict()),
                               tmp_path)
    assert_same_run(reference, ours, atol=0)
    # runner.train_loop is the configured class, and its counters are the run's
    assert type(ours.runner.train_loop).__name__ == 'NamedEpochLoop'
    assert (ours.runner.train_loop.epoch, ours.runner.train_loop.iter) == (2, 8) == (ours.runner.epoch,
                                                                                     ours.runner.iter)


def test_a_training_loop_that_iterates_otherwise_is_built_but_refused_by_name_at_train(tmp_path):
    message = r'train_cfg.type: SkippingTrainLoop overrides EpochBasedTrainLoop.run_iter\(\)'
    with pytest.raises(ConfigError, match=message):
        parse_train_cfg(dict(type='SkippingTrainLoop', max_epochs=2))
    with pytest.raises(KeyError, match='train_cfg.type: .NoSuchLoop. is not in the LOOPS registry'):
        parse_train_cfg(dict(type='NoSuchLoop', max_epochs=2))
    cfg = dict(CUSTOM, train_cfg=dict(type='SkippingTrainLoop', max_epochs=2), val_cfg=dict(),
               work_dir=str(tmp_path), experiment_name=f'skipping_{tmp_path.name}')
    runner = FlexibleRunner.from_cfg(cfg)  # mmengine builds its loops lazily: nothing refused yet
    assert type(runner.train_loop).__name__ == 'SkippingTrainLoop' and runner.max_epochs == 2
    with pytest.raises(TypeError, match=message):  # Lightning's fit loop cannot run its run_iter
        runner.train()


@HOOKS.register_module(force=True)
class SwapLoaderHook(Hook):
    """Gives the training loop a new dataloader for the last epochs, as mmyolo's YOLOXModeSwitchHook does."""

    def __init__(self, switch_epoch, batches=None):
        self.switch_epoch, self.batches = switch_epoch, batches

    def before_train_epoch(self, runner):
        if runner.epoch == self.switch_epoch:
            cfg = copy.deepcopy(runner.cfg.train_dataloader)
            cfg.dataset.seed = 7  # other samples
            if self.batches is not None:
                cfg.dataset.size = self.batches * cfg.batch_size
            runner.train_loop.dataloader = MMRunner.build_dataloader(cfg)


def test_a_dataloader_a_hook_assigns_is_what_the_next_epochs_iterate(tmp_path):
    from parity import assert_same_run, run_both
    cfg = dict(CUSTOM, train_cfg=dict(by_epoch=True, max_epochs=3), val_cfg=dict(),
               custom_hooks=[dict(type='SwapLoaderHook', switch_epoch=1)])
    reference, ours = run_both(cfg, tmp_path)
    assert_same_run(reference, ours, atol=0)
    assert ours.runner.train_dataloader.dataset.labels.equal(reference.runner.train_dataloader.dataset.labels)
    longer = dict(cfg, custom_hooks=[dict(type='SwapLoaderHook', switch_epoch=1, batches=6)],
                  work_dir=str(tmp_path / 'longer'), experiment_name=f'longer_{tmp_path.name}')
    with pytest.raises(ConfigError, match='train_dataloader: a hook gave runner.train_loop a dataloader of 6 '
                                          'batches per epoch; Lightning fixed the epoch at 4'):
        FlexibleRunner.from_cfg(longer).train()


def test_a_longer_run_validates_at_the_old_end_only_by_the_rule():
    """A finished 5-epoch run validated at epoch 5 because it was the last; extended to 8 it is not due there."""
    short = _loop(by_epoch=True, max_epochs=5, val_interval=2)
    for _ in range(5):
        short.epoch_done()
    short.validation_pending = short.validation_due()
    assert short.validation_pending
    longer = _loop(by_epoch=True, max_epochs=8, val_interval=2)
    longer.load_state_dict(short.state_dict())
    assert not longer.validation_pending and longer.epoch == 5
    same = _loop(by_epoch=True, max_epochs=5, val_interval=2)
    same.load_state_dict(short.state_dict())
    assert same.validation_pending
