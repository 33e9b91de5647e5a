"""Optimizer wrappers: built by mmengine, their backward, step and no-sync routed through Lightning."""
import pytest
import torch
from conftest import data
from mmengine.optim import LinearLR, OptimWrapper, OptimWrapperDict

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.runtime.optim import build_optim_wrapper, route_through_lightning, scale_lr, wrappers_of


class _Logger:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(line)


def test_every_form_mmengine_accepts():
    model = torch.nn.Linear(2, 2)
    assert isinstance(build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1))), OptimWrapper)
    assert isinstance(build_optim_wrapper(model, torch.optim.SGD(model.parameters(), lr=0.1)), OptimWrapper)
    built = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    assert build_optim_wrapper(model, built) is built
    wrappers = build_optim_wrapper(model, dict(a=built, b=OptimWrapper(torch.optim.Adam(model.parameters()))))
    assert isinstance(wrappers, OptimWrapperDict) and [w.optimizer for w in wrappers_of(wrappers)][0] is built.optimizer
    with pytest.raises(ConfigError, match='optim_wrapper.a: each item mush be an optimizer object'):
        build_optim_wrapper(model, dict(a=dict(lr=0.1)))


def test_linear_scaling_rule_uses_the_real_batch():
    model = torch.nn.Linear(2, 2)
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    logger = _Logger()
    scale_lr(wrapper, dict(enable=True, base_batch_size=16), batch_size=8, world_size=4, logger=logger)
    assert wrapper.get_lr()['lr'] == [pytest.approx(0.2)] and 'Scaling the original LR by 2.0' in logger.lines[0]
    with pytest.raises(ConfigError, match='auto_scale_lr: Lack of `base_batch_size`'):
        scale_lr(wrapper, dict(enable=True), batch_size=8, world_size=1, logger=logger)


def test_routing_binds_methods_and_keeps_the_wrappers_class(tmp_path):
    runner = FlexibleRunner.from_cfg(dict(
        model=dict(type='ToyClassifier'), train_dataloader=data(size=12, batch_size=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1), accumulative_counts=2),
        train_cfg=dict(by_epoch=True, max_epochs=1), work_dir=str(tmp_path),
        experiment_name=f'optim_{tmp_path.name}', randomness=dict(seed=0)))
    runner.train()
    wrapper = runner.optim_wrapper
    assert type(wrapper) is OptimWrapper  # no subclass swapped in
    assert wrapper.backward.__self__ is not wrapper  # a bound route
    assert wrapper.step.__self__ is wrapper and wrapper.step.__func__ is not OptimWrapper.step  # the wrapper's, routed
    assert runner.trainer.global_step == 2  # steps after iterations 2 and 3 (the last one flushes the window)


class _Module:
    """What a route needs of a LightningModule when it steps: ``optimizers()``."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def optimizers(self):
        return self.optimizer


@pytest.mark.parametrize('schedulers_first', [False, True])
def test_routed_step_keeps_the_schedulers_step_counter(schedulers_first, recwarn):
    """mmengine's schedulers count the wrapper's steps by wrapping ``step`` when they are built, and warn that
    ``optimizer.step()`` was overridden when the count is gone: built before the route (a resume before
    ``train()``) or after it, they keep counting the routed step."""
    model = torch.nn.Linear(2, 2)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    module = _Module(wrapper.optimizer)
    build = lambda: LinearLR(wrapper, start_factor=0.5, by_epoch=False, begin=0, end=4)  # noqa: E731
    scheduler = build() if schedulers_first else None
    route_through_lightning(wrapper, module)
    route_through_lightning(wrapper, module)  # a later fit of the same run: routed once
    scheduler = scheduler or build()
    assert getattr(wrapper.step, '_with_counter', False)
    model(torch.ones(1, 2)).sum().backward()
    wrapper.step()
    scheduler.step()
    assert wrapper._global_step == 0 and scheduler.get_last_value() == [pytest.approx(0.1 * (0.5 + 0.5 / 3))]
    assert not [w for w in recwarn.list if 'scheduler' in str(w.message)]
