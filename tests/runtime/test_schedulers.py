"""Parameter schedulers as mmengine's Runner builds them, and their state in checkpoints."""
import pytest
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict

from mm_lightning import ConfigError
from mm_lightning.runtime.schedulers import build_param_schedulers, load_scheduler_states, scheduler_states


def _wrapper(lr=0.1):
    return OptimWrapper(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr))


def test_one_list_or_one_per_optimizer():
    (scheduler,) = build_param_schedulers(dict(type='MultiStepLR', milestones=[1], by_epoch=False, end=4),
                                          _wrapper(), None)
    assert type(scheduler).__name__ == 'MultiStepLR'
    wrappers = OptimWrapperDict(g=_wrapper(), d=_wrapper())
    built = build_param_schedulers(dict(g=dict(type='ConstantLR', by_epoch=False, end=2),
                                        d=dict(type='StepLR', step_size=1, by_epoch=False, end=3)), wrappers, None)
    assert sorted(built) == ['d', 'g'] and type(built['d'][0]).__name__ == 'StepLR'
    with pytest.raises(ConfigError, match=r"param_scheduler: no entry for optimizer 'd'"):
        build_param_schedulers(dict(g=dict(type='ConstantLR', end=2)), wrappers, None)
    with pytest.raises(ConfigError, match=r'param_scheduler\[1\]: scheduler should be a _ParamScheduler object'):
        build_param_schedulers([dict(type='ConstantLR', end=2), 'cosine'], _wrapper(), None)


def test_state_round_trip():
    wrapper = _wrapper()
    schedulers = build_param_schedulers([dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=4)], wrapper, None)
    for _ in range(3):
        schedulers[0].step()
    fresh = build_param_schedulers([dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=4)], _wrapper(), None)
    load_scheduler_states(fresh, scheduler_states(schedulers))
    assert fresh[0].last_step == schedulers[0].last_step == 3
