"""The runner hooks receive: mmengine's whole runner API, read from the Lightning objects."""
import copy
import inspect

import pytest
import torch
from conftest import data
from lightning.pytorch.strategies import DDPStrategy
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmengine.runner import EpochBasedTrainLoop, Runner, ValLoop
from mmengine.runner import FlexibleRunner as MMFlexibleRunner

from mm_lightning import FlexibleRunner

#: Runner (not FlexibleRunner) methods that hooks and OpenMMLab tools call.
RUNNER_METHODS = ('build_optim_wrapper', 'build_param_scheduler', 'build_model', 'wrap_model', 'scale_lr',
                  'set_randomness', 'setup_env', 'build_logger')
#: Attributes mmengine's runners set in ``__init__`` (read by hooks, assigned by tools and tests).
ATTRIBUTES = ('cfg', 'default_scope', 'log_processor', 'message_hub', 'model', 'optim_wrapper', 'param_schedulers',
              'strategy', 'visualizer', 'logger')
ASSIGNABLE = ('message_hub', 'visualizer', 'logger', 'log_processor', 'model', 'optim_wrapper', 'param_schedulers')

CFG = dict(
    model=dict(type='ToyClassifier'), train_dataloader=data(size=28, batch_size=4),
    val_dataloader=data(size=8, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
    param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=True),
    train_cfg=dict(by_epoch=True, max_epochs=4), randomness=dict(seed=0))


def _runner(tmp_path, **changes):
    cfg = dict(copy.deepcopy(CFG), work_dir=str(tmp_path), experiment_name=f'view_{tmp_path.name}', **changes)
    return FlexibleRunner.from_cfg(cfg)


def _public(cls):
    return {name for name in dir(cls) if not name.startswith('_')}


@pytest.mark.parametrize('name', sorted(_public(MMFlexibleRunner) | set(RUNNER_METHODS)))
def test_every_public_name_of_mmengines_runner_api_exists_with_its_parameters(name):
    reference = inspect.getattr_static(MMFlexibleRunner, name, None) or inspect.getattr_static(Runner, name)
    ours = inspect.getattr_static(FlexibleRunner, name, None)
    assert ours is not None, f'FlexibleRunner.{name} is missing'
    if isinstance(reference, property):
        assert isinstance(ours, property), name
        return
    reference, ours = getattr(MMFlexibleRunner, name, None) or getattr(Runner, name), getattr(FlexibleRunner, name)
    expected = [(p.name, p.kind) for p in inspect.signature(reference).parameters.values()]
    actual = [(p.name, p.kind) for p in inspect.signature(ours).parameters.values()]
    assert actual == expected, name


def test_lazily_built_parts_answer_before_training(tmp_path):
    runner = _runner(tmp_path)
    # as mmengine's: configs until something asks for the built part
    assert runner._train_loop == CFG['train_cfg'] and runner._val_loop == {} and runner.optim_wrapper == \
        CFG['optim_wrapper'] and runner._train_dataloader == CFG['train_dataloader']
    assert (runner.max_epochs, runner.max_iters, runner.epoch, runner.iter) == (4, 28, 0, 0)
    assert type(runner.train_loop) is EpochBasedTrainLoop and isinstance(runner.val_loop, ValLoop)
    assert runner._train_loop is runner.train_loop and runner._val_loop is runner.val_loop
    assert runner.train_dataloader is runner.datamodule.loader('train') and len(runner.val_dataloader.dataset) == 8
    assert runner.test_loop is None and runner.strategy is None  # no test config; no Trainer running yet
    runner.train()
    assert (runner.epoch, runner.iter) == (4, 28) and runner.strategy is runner.trainer.strategy


@pytest.mark.parametrize('name', ASSIGNABLE)
def test_attributes_mmengine_lets_code_assign(tmp_path, name):
    runner = _runner(tmp_path)
    assert all(hasattr(runner, attribute) for attribute in ATTRIBUTES)
    value = dict(message_hub=MessageHub.get_instance(f'assigned_{tmp_path.name}'),
                 model=torch.nn.Linear(2, 2)).get(name, object())
    setattr(runner, name, value)
    assert getattr(runner, name) is value


def test_build_methods(tmp_path):
    runner = _runner(tmp_path, auto_scale_lr=dict(enable=True, base_batch_size=2))
    wrapper = runner.build_optim_wrapper(dict(optimizer=dict(type='SGD', lr=0.1)))
    assert isinstance(wrapper, OptimWrapper) and runner.build_optim_wrapper(wrapper) is wrapper
    assert isinstance(runner.build_optim_wrapper(torch.optim.SGD(runner.model.parameters(), lr=0.1)), OptimWrapper)
    with pytest.raises(AssertionError, match='build_optimizer` should be called before'):
        runner.build_param_scheduler(dict(type='MultiStepLR', milestones=[1]))
    runner.scale_lr(wrapper, dict(enable=True, base_batch_size=2))
    assert wrapper.get_lr()['lr'] == [pytest.approx(0.2)]  # batch 4 against base 2
    runner.optim_wrapper = wrapper
    (scheduler,) = runner.build_param_scheduler(dict(type='MultiStepLR', milestones=[1]))
    assert scheduler.optimizer is wrapper
    assert type(runner.build_model(dict(type='ToyClassifier'))).__name__ == 'ToyClassifier'
    assert runner.wrap_model(None, runner.model) is runner.model  # the Lightning strategy wraps when it starts
    assert runner.build_message_hub().instance_name == runner.experiment_name
    assert runner.build_train_loop(dict(by_epoch=False, max_iters=5)).max_iters == 5
    assert runner.build_val_loop(dict(fp16=True)).fp16 is True
    assert runner.build_strategy(None) == 'auto'  # one process: Lightning's own choice, as trainer_kwargs gives
    assert isinstance(runner.build_strategy(dict(type='DDPStrategy')), DDPStrategy)
    runner.set_randomness(5)
    assert runner.seed == 5
    assert runner.build_logger(log_level='WARNING').instance_name == runner.experiment_name
