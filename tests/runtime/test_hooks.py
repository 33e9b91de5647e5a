"""mmengine hooks as a run holds them: defaults merged, priority order, per-stage dispatch."""
import pytest
from conftest import data
from mmengine.hooks import Hook

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.runtime.hooks import HookList, merged_default_hooks, split_custom_hooks

TRAIN = dict(model=dict(type='ToyClassifier'), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
             randomness=dict(seed=0))


def test_priority_order_and_ties(tmp_path):
    from mmengine.hooks import Hook
    order = []

    class Named(Hook):
        def __init__(self, name, priority):
            self.name, self.priority = name, priority

        def before_train(self, runner):
            order.append(self.name)

    cfg = dict(TRAIN, train_dataloader=data(size=4, batch_size=4), train_cfg=dict(by_epoch=True, max_epochs=1),
               work_dir=str(tmp_path), experiment_name=f'prio_{tmp_path.name}')
    runner = FlexibleRunner.from_cfg(cfg)
    for name, priority in [('low', 'LOW'), ('first-normal', 'NORMAL'), ('int-40', 40), ('second-normal', 50),
                           ('highest', 'HIGHEST')]:
        runner.register_hook(Named(name, priority))
    runner.train()
    assert order == ['highest', 'int-40', 'first-normal', 'second-normal', 'low']


def test_default_hooks_merge_and_removal():
    hooks = merged_default_hooks(dict(logger=dict(type='LoggerHook', interval=5), checkpoint=None))
    assert 'checkpoint' not in hooks and hooks['logger']['interval'] == 5 and 'timer' in hooks


def test_custom_hooks_split_lightning_callbacks_off():
    hooks, callbacks = split_custom_hooks([dict(type='EMAHook'),
                                           dict(type='lightning.pytorch.callbacks.LearningRateMonitor')])
    assert [h['type'] for h in hooks] == ['EMAHook'] and len(callbacks) == 1


def test_dispatch_only_to_hooks_that_override_a_stage():
    calls = []

    class OnlyAfterIter(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            calls.append(batch_idx)

    hooks = HookList()
    hooks.register(OnlyAfterIter())
    assert hooks.stage('before_train_iter') == [] and len(hooks.stage('after_train_iter')) == 1
    hooks.call(None, 'after_train_iter', batch_idx=3)
    assert calls == [3]
    with pytest.raises(ConfigError, match='custom_hooks: bad priority'):
        hooks.register(OnlyAfterIter(), priority='SOMETIMES')
