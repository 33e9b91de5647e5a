"""Strategy and launcher translation: the Lightning objects carry the configured settings.

The strategy objects are built and inspected here; a 2-process DDP run trains for real
(tests/scripts/ddp_train.py), FSDP and DeepSpeed in tests/test_fsdp.py and tests/test_deepspeed.py.
"""
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
import torch
from lightning.fabric.plugins.environments import TorchElasticEnvironment
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from paths import TESTS

from mm_lightning import ConfigError, trainer_kwargs
from mm_lightning.translate.sharding import FSDP2Strategy

TORCHRUN_ENV = dict(WORLD_SIZE='4', LOCAL_WORLD_SIZE='2', RANK='0', LOCAL_RANK='0', GROUP_RANK='0',
                    MASTER_ADDR='127.0.0.1', MASTER_PORT='29500', TORCHELASTIC_RUN_ID='x')


@pytest.fixture
def torchrun(monkeypatch):
    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)


def _kwargs(**cfg):
    cfg.setdefault('env_cfg', dict(dist_cfg=dict(backend='gloo')))
    return trainer_kwargs(cfg)


def test_single_device(torchrun):
    with pytest.raises(ConfigError, match='SingleDeviceStrategy cannot run under launcher'):
        _kwargs(strategy=dict(type='SingleDeviceStrategy'))
    kwargs = _kwargs(strategy=dict(type='SingleDeviceStrategy'), launcher='none')
    assert isinstance(kwargs['strategy'], SingleDeviceStrategy) and kwargs['devices'] == 1


def test_ddp_model_wrapper_options(torchrun):
    kwargs = _kwargs(strategy=dict(type='DDPStrategy', model_wrapper=dict(
        find_unused_parameters=True, broadcast_buffers=False, static_graph=True, gradient_as_bucket_view=True)),
        env_cfg=dict(dist_cfg=dict(backend='gloo', timeout=120)))
    strategy = kwargs['strategy']
    assert isinstance(strategy, DDPStrategy) and isinstance(strategy.cluster_environment, TorchElasticEnvironment)
    assert strategy._ddp_kwargs == dict(find_unused_parameters=True, broadcast_buffers=False, static_graph=True,
                                        gradient_as_bucket_view=True)
    assert strategy.process_group_backend == 'gloo' and strategy._timeout == timedelta(seconds=120)
    assert (kwargs['devices'], kwargs['num_nodes']) == (2, 2)


def test_ddp_strategy_without_a_model_wrapper_keeps_buffers_per_rank_as_mmengine(torchrun):
    """mmengine's DDPStrategy wraps with MMDistributedDataParallel(broadcast_buffers=False) when no model_wrapper
    is given; torch's (and Lightning's) default would broadcast rank 0's BatchNorm statistics at every forward."""
    assert _kwargs(strategy=dict(type='DDPStrategy'))['strategy']._ddp_kwargs == dict(broadcast_buffers=False)
    assert _kwargs(strategy=dict(type='DDPStrategy', model_wrapper=dict(static_graph=True)))[
        'strategy']._ddp_kwargs == dict(static_graph=True)  # a given wrapper keeps torch's defaults, as in mmengine


def test_runner_style_ddp_defaults_and_model_wrapper_cfg(torchrun):
    strategy = _kwargs(find_unused_parameters=True)['strategy']
    assert strategy._ddp_kwargs == dict(broadcast_buffers=False, find_unused_parameters=True)  # as Runner wraps
    strategy = _kwargs(model_wrapper_cfg=dict(type='MMDistributedDataParallel', static_graph=True))['strategy']
    assert strategy._ddp_kwargs == dict(static_graph=True)
    strategy = _kwargs(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel', sharding_strategy='SHARD_GRAD_OP',
                                              use_orig_params=True))['strategy']
    assert isinstance(strategy, FSDP2Strategy) and strategy.plan.reshard_after_forward is False
    with pytest.raises(ConfigError, match='model_wrapper_cfg.type: .MMSeparateDistributedDataParallel. is not'):
        _kwargs(model_wrapper_cfg=dict(type='MMSeparateDistributedDataParallel'))


def test_fsdp_options_become_an_fsdp2_plan_with_notes_for_what_has_no_equal(torchrun):
    from mmengine.registry import FUNCTIONS

    def check_linear(module):
        return isinstance(module, torch.nn.Linear)

    FUNCTIONS.register_module(name='check_linear', module=check_linear, force=True)
    kwargs = _kwargs(strategy=dict(
        type='FSDPStrategy', state_dict_cfg='full',
        model_wrapper=dict(sharding_strategy='HYBRID_SHARD', cpu_offload=True, use_orig_params=False,
                           backward_prefetch='BACKWARD_POST',
                           auto_wrap_policy=dict(type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
                                                 min_num_params=1000),
                           mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32',
                                                buffer_dtype='bfloat16')),
        activation_checkpointing=dict(check_fn='check_linear')))
    strategy = kwargs['strategy']
    assert isinstance(strategy, FSDP2Strategy) and kwargs['accelerator'] == 'cpu'  # FSDP2 runs on CPU too
    plan = strategy.plan
    assert (plan.layout, plan.reshard_after_forward, plan.state_dict_type) == ('hybrid', True, 'full')
    assert plan.cpu_offload and (plan.param_dtype, plan.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert plan.auto_wrap_policy.keywords == dict(min_num_params=1000)
    assert plan.activation_checkpointing(torch.nn.Linear(2, 2)) and not plan.activation_checkpointing(torch.nn.ReLU())
    assert sorted(note.partition(':')[0] for note in plan.notes) == [
        "strategy.model_wrapper.backward_prefetch='BACKWARD_POST'",
        "strategy.model_wrapper.mixed_precision.buffer_dtype='bfloat16'",
        'strategy.model_wrapper.use_orig_params=False']
    assert _kwargs(strategy=dict(type='FSDPStrategy'))['strategy'].plan.state_dict_type == 'sharded'  # 'local'
    for strategy_name, layout in (('FULL_SHARD', ('shard', True)), ('SHARD_GRAD_OP', ('shard', False)),
                                  ('NO_SHARD', ('replicate', False)), ('_HYBRID_SHARD_ZERO2', ('hybrid', False))):
        plan = _kwargs(strategy=dict(type='FSDPStrategy', model_wrapper=dict(sharding_strategy=strategy_name)))[
            'strategy'].plan
        assert (plan.layout, plan.reshard_after_forward) == layout, strategy_name
    with pytest.raises(ConfigError, match=r'strategy.model_wrapper.sharding_strategy: .HALF_SHARD. is not one of'):
        _kwargs(strategy=dict(type='FSDPStrategy', model_wrapper=dict(sharding_strategy='HALF_SHARD')))
    with pytest.raises(ConfigError, match=r'strategy.model_wrapper: unsupported options \[.flat_param.\]'):
        _kwargs(strategy=dict(type='FSDPStrategy', model_wrapper=dict(flat_param=True)))


@pytest.mark.deepspeed
def test_deepspeed_config_and_precision(torchrun, tmp_path):
    base = tmp_path / 'ds.json'
    base.write_text(json.dumps(dict(zero_optimization=dict(stage=1), gradient_clipping=0.5)))
    kwargs = _kwargs(strategy=dict(
        type='DeepSpeedStrategy', config=str(base),
        zero_optimization=dict(stage=3, offload_optimizer=dict(device='cpu'), offload_param=dict(device='cpu')),
        fp16=dict(enabled=True, loss_scale=0, initial_scale_power=12), inputs_to_half=['inputs'],
        exclude_frozen_parameters=True),
        train_dataloader=dict(batch_size=12))
    strategy = kwargs['strategy']
    assert type(strategy).__name__ == 'AnyDeviceDeepSpeedStrategy'  # Lightning's, which also runs on CPU
    assert strategy.config['zero_optimization']['stage'] == 3 and strategy.config['gradient_clipping'] == 0.5
    assert strategy.config['train_micro_batch_size_per_gpu'] == 12
    # Lightning sets the accumulation from the Trainer (1), and refuses a config that has it
    assert 'gradient_accumulation_steps' not in strategy.config and strategy.exclude_frozen_parameters
    assert kwargs['precision'] == '16-mixed'
    kwargs = _kwargs(strategy=dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=2),
                                   bf16=dict(enabled=True)))
    assert kwargs['precision'] == 'bf16-mixed' and kwargs['strategy'].config['train_micro_batch_size_per_gpu'] == 1
    with pytest.raises(ConfigError, match='with DeepSpeedStrategy use DeepSpeedOptimWrapper'):
        _kwargs(strategy=dict(type='DeepSpeedStrategy'),
                optim_wrapper=dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.1)))
    with pytest.raises(ConfigError, match=r'^strategy.gradient_accumulation_steps: 4 is not supported'):
        _kwargs(strategy=dict(type='DeepSpeedStrategy', gradient_accumulation_steps=4))


def test_colossalai_and_unknown_strategies(torchrun):
    with pytest.raises(ConfigError, match="ColossalAIStrategy is not supported.*type='FSDPStrategy'"):
        _kwargs(strategy=dict(type='ColossalAIStrategy'))
    with pytest.raises(ConfigError, match="strategy.type: 'Megatron' is not supported"):
        _kwargs(strategy=dict(type='Megatron'))
    with pytest.raises(ConfigError, match=r"strategy: unsupported options \['bucket'\]"):
        _kwargs(strategy=dict(type='DDPStrategy', bucket=1))


def test_lightning_names_are_accepted(torchrun):
    assert _kwargs(strategy='ddp')['strategy'] == 'ddp'
    strategy = _kwargs(strategy=dict(type='lightning.pytorch.strategies.FSDPStrategy',
                                     sharding_strategy='NO_SHARD'))['strategy']
    assert isinstance(strategy, FSDPStrategy) and strategy.sharding_strategy.name == 'NO_SHARD'
    assert isinstance(strategy.cluster_environment, TorchElasticEnvironment)


def test_two_process_ddp_training_equals_one_process(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    env = dict(os.environ, PYTHONPATH=TESTS, OMP_NUM_THREADS='1')
    script = os.path.join(TESTS, 'scripts', 'ddp_train.py')
    single = subprocess.run([sys.executable, script, str(tmp_path / 'single'), '1'], capture_output=True,
                            text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    result = subprocess.run([torchrun, '--nproc_per_node=2', '--master_port=29532', script,
                             str(tmp_path / 'ddp'), '2'], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one = torch.load(tmp_path / 'single' / 'final.pt', weights_only=True)
    two = torch.load(tmp_path / 'ddp' / 'final.pt', weights_only=True)
    initial = torch.load(tmp_path / 'single' / 'initial.pt', weights_only=True)
    assert max((one[k] - initial[k]).abs().max() for k in one) > 1e-2  # it trained
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=0)
    with open(tmp_path / 'ddp' / 'rank1_writes.json') as f:
        assert json.load(f) == []  # rank 1 wrote nothing into the work_dir
    logs = [f for f in os.listdir(tmp_path / 'ddp' / 'work') if os.path.isdir(tmp_path / 'ddp' / 'work' / f)]
    (log_dir,) = logs
    with open(tmp_path / 'ddp' / 'work' / log_dir / f'{log_dir}.log') as f:
        log = f.read()
    assert 'GPU number: 2' in log and 'Distributed training: True' in log
    assert 'the current batch size is 8. Scaling the original LR by 2.0' in log  # auto_scale_lr, real world size
    assert os.path.isfile(tmp_path / 'ddp' / 'work' / 'epoch_2.pth')


def test_deepspeed_extra_missing_says_how_to_install(torchrun, monkeypatch):
    monkeypatch.setitem(sys.modules, 'deepspeed', None)
    with pytest.raises(ConfigError, match=r'pip install "mm_lightning\[deepspeed\]"'):
        _kwargs(strategy=dict(type='DeepSpeedStrategy'))


def test_diff_rank_seed_gives_each_rank_its_own_seed(tmp_path, monkeypatch):
    from mm_lightning import FlexibleRunner
    monkeypatch.setattr('mmengine.runner.utils.get_rank', lambda: 3)
    runner = FlexibleRunner(model=dict(type='ToyClassifier'), work_dir=str(tmp_path),
                            experiment_name=f'rankseed_{tmp_path.name}',
                            randomness=dict(seed=10, diff_rank_seed=True))
    assert runner.seed == 13  # seed + rank, as mmengine
    assert runner.datamodule.diff_rank_seed is True


def test_bf16_amp_trains_on_cpu(tmp_path):
    from conftest import data
    from parity import ParityRecorder

    from mm_lightning import FlexibleRunner
    runner = FlexibleRunner.from_cfg(dict(
        model=dict(type='ToyClassifier'), work_dir=str(tmp_path), experiment_name=f'bf16_{tmp_path.name}',
        train_dataloader=data(size=48, batch_size=8), train_cfg=dict(by_epoch=True, max_epochs=3),
        optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16', optimizer=dict(type='SGD', lr=0.1),
                           clip_grad=dict(max_norm=1.0)),
        randomness=dict(seed=0)))
    recorder = ParityRecorder()
    runner.register_hook(recorder)
    runner.train()
    assert runner.trainer.precision_plugin.precision == 'bf16-mixed'
    assert type(runner.optim_wrapper).__name__ == 'OptimWrapper'  # AMP is the plugin's job
    losses = [r['loss'] for r in recorder.iterations]
    assert losses[-1] < losses[0] and all(loss == loss for loss in losses)
    assert len(runner.message_hub.get_scalar('train/grad_norm').data[0]) == 18  # clipped every step
