"""AmpOptimWrapper settings as Lightning precision plugins and loss scalers (mm_lightning.translate.precision).

The scalers are driven on the CPU the way Lightning's precision plugin drives them
(``scale(loss).backward()``, ``step``, ``update``), with a gradient that overflows.
"""
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision
from lightning.pytorch.strategies import FSDPStrategy

from mm_lightning import ConfigError, trainer_kwargs
from mm_lightning.translate.precision import (
    StaticGradScaler,
    _grad_scaler,
    _sharded_scaler,
    precision_settings,
    strip_amp,
)

SGD = dict(type='SGD', lr=0.1)


def test_amp_optim_wrapper_precision():
    kwargs = trainer_kwargs(dict(optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16', optimizer=SGD)))
    (plugin,) = kwargs['plugins']
    assert isinstance(plugin, MixedPrecision) and plugin.precision == 'bf16-mixed' and plugin.scaler is None
    with pytest.raises(ConfigError, match='float16 needs a GPU'):
        trainer_kwargs(dict(optim_wrapper=dict(type='AmpOptimWrapper', optimizer=SGD)))
    plugin = trainer_kwargs(dict(optim_wrapper=dict(type='AmpOptimWrapper', loss_scale=256.0, optimizer=SGD)),
                            accelerator='gpu')['plugins'][0]
    assert plugin.precision == '16-mixed' and isinstance(plugin.scaler, StaticGradScaler)
    # loss_scale forms -> GradScaler settings
    assert type(_grad_scaler('k', 'dynamic', 'cpu')) is torch.amp.GradScaler
    assert _grad_scaler('k', 256.0, 'cpu').get_scale() == 256.0
    scaler = _grad_scaler('k', dict(init_scale=1024.0, growth_interval=10), 'cpu')
    assert scaler.get_scale() == 1024.0 and scaler.get_growth_interval() == 10
    with pytest.raises(ConfigError, match="k.loss_scale: expected 'dynamic', a number or a dict"):
        _grad_scaler('k', 'static', 'cpu')


def test_fsdp_amp_uses_fsdp_precision_with_static_scale():
    cfg = dict(type='AmpOptimWrapper', loss_scale=512.0, optimizer=dict(type='AdamW', lr=1e-3))
    (plugin,) = precision_settings(cfg, FSDPStrategy(), 'gpu')['plugins']
    assert isinstance(plugin, FSDPPrecision) and plugin.precision == '16-mixed'
    assert type(plugin.scaler).__name__ == 'StaticShardedGradScaler' and plugin.scaler.static_scale == 512.0


def test_amp_entries_of_several_optimizers():
    cfg = dict(generator=dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale=64.0, optimizer=SGD),
               discriminator=dict(type='OptimWrapper', optimizer=SGD))
    assert strip_amp(cfg) == dict(generator=dict(type='OptimWrapper', optimizer=SGD),
                                  discriminator=dict(type='OptimWrapper', optimizer=SGD))
    (plugin,) = precision_settings(cfg, None, 'cpu')['plugins']
    assert plugin.precision == 'bf16-mixed'
    cfg['discriminator'] = dict(type='AmpOptimWrapper', dtype='float16', optimizer=SGD)
    with pytest.raises(ConfigError, match='optim_wrapper.generator: all AmpOptimWrapper entries must use one dtype'):
        precision_settings(cfg, None, 'gpu')
    with pytest.raises(ConfigError, match='optim_wrapper.dtype: expected float16 or bfloat16'):
        precision_settings(dict(type='AmpOptimWrapper', dtype='int8', optimizer=SGD), None, 'gpu')


@pytest.fixture
def one_process_group(tmp_path):
    """ShardedGradScaler all-reduces its overflow flag: give it a 1-process gloo group."""
    dist.init_process_group('gloo', store=dist.FileStore(str(tmp_path / 'store'), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _step_with_overflow(scaler: torch.amp.GradScaler, weight: torch.nn.Parameter) -> None:
    """One optimizer step whose scaled gradient holds an inf, as the precision plugin runs it."""
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler.scale((weight * torch.tensor([float('inf'), 1.0])).sum()).backward()
    scaler.step(optimizer)
    scaler.update()


def _scaler(loss_scale, sharded: bool) -> torch.amp.GradScaler:
    return _sharded_scaler(loss_scale, 'cpu') if sharded else _grad_scaler('k', loss_scale, 'cpu')


@pytest.mark.parametrize('sharded', [False, True], ids=['GradScaler', 'ShardedGradScaler'])
def test_overflow_backs_off_a_dynamic_scale_and_keeps_a_static_one(sharded, request):
    if sharded:
        request.getfixturevalue('one_process_group')
    for loss_scale, scale_after in ((128.0, 128.0), (dict(init_scale=128.0), 64.0)):
        scaler = _scaler(loss_scale, sharded)
        weight = torch.nn.Parameter(torch.ones(2))
        _step_with_overflow(scaler, weight)
        assert torch.equal(weight.detach(), torch.ones(2))  # the step was skipped
        assert scaler.get_scale() == scale_after


def test_finite_steps_apply_the_unscaled_gradient():
    for loss_scale in (8.0, 'dynamic'):
        scaler = _grad_scaler('k', loss_scale, 'cpu')
        weight = torch.nn.Parameter(torch.ones(2))
        optimizer = torch.optim.SGD([weight], lr=0.1)
        scaler.scale(weight.sum()).backward()
        scaler.step(optimizer)
        scaler.update()
        torch.testing.assert_close(weight.detach(), torch.full((2,), 0.9))  # gradient 1, not 1 x scale
