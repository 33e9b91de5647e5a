"""Parity: mmengine's Runner and FlexibleRunner agree at every iteration on the same config."""
from conftest import data
from parity import assert_same_run, run_both

QUIET_HOOKS = dict(logger=dict(type='LoggerHook', interval=1), checkpoint=dict(type='CheckpointHook', interval=1))


def test_epoch_based_warmup_multistep_batchnorm(tmp_path):
    cfg = dict(
        model=dict(type='ToyClassifier', batch_norm=True),
        train_dataloader=data(size=44, batch_size=8),
        val_dataloader=data(size=21, seed=1, shuffle=False),
        val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=7),
                         dict(type='MultiStepLR', milestones=[2, 3], gamma=0.3, by_epoch=True)],
        train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=1),
        default_hooks=QUIET_HOOKS, randomness=dict(seed=7))
    reference, ours = run_both(cfg, tmp_path)
    assert len(ours.iterations) == 4 * 6 and len(ours.val_metrics) == 4
    assert_same_run(reference, ours)


def test_iteration_based_infinite_sampler_dropout(tmp_path):
    cfg = dict(
        model=dict(type='ToyClassifier', dropout=0.3),
        train_dataloader=data(size=30, batch_size=4, sampler='InfiniteSampler'),
        val_dataloader=data(size=13, seed=1, shuffle=False, batch_size=4),
        val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=5),
                         dict(type='CosineAnnealingLR', by_epoch=False, begin=5, T_max=20)],
        train_cfg=dict(by_epoch=False, max_iters=25, val_interval=7, val_begin=3),
        default_hooks=dict(QUIET_HOOKS, checkpoint=dict(type='CheckpointHook', interval=10, by_epoch=False)),
        randomness=dict(seed=3))
    reference, ours = run_both(cfg, tmp_path)
    assert len(ours.iterations) == 25
    assert len(ours.val_metrics) == 4  # iterations 7, 14, 21 and the last one
    assert_same_run(reference, ours)


def test_adamw_paramwise_accumulation_clipping_iter_conversion(tmp_path):
    cfg = dict(
        model=dict(type='ToyClassifier', batch_norm=True),
        train_dataloader=data(size=44, batch_size=4),
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.05),
            paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                               custom_keys={'net.0': dict(lr_mult=0.5)}),
            accumulative_counts=3, clip_grad=dict(max_norm=0.5)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=1,
                              convert_to_iter_based=True),
                         dict(type='CosineAnnealingLR', by_epoch=True, begin=1, T_max=2,
                              convert_to_iter_based=True)],
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=QUIET_HOOKS, randomness=dict(seed=11))
    reference, ours = run_both(cfg, tmp_path)
    assert len(ours.iterations) == 3 * 11
    assert 'grad_norm' not in ours.iterations[0]  # clipping logs to the message hub, not the outputs
    assert_same_run(reference, ours)
    hub_ref = reference.runner.message_hub.get_scalar('train/grad_norm').data[0]
    hub_ours = ours.runner.message_hub.get_scalar('train/grad_norm').data[0]
    assert len(hub_ours) == len(hub_ref) == 11  # counts run across epochs: updates at 3, 6, ..., 33
    assert abs(hub_ours - hub_ref).max() <= 1e-6


def test_value_clipping(tmp_path):
    cfg = dict(
        model=dict(type='ToyClassifier'),
        train_dataloader=data(size=24, batch_size=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.5), clip_grad=dict(type='value', clip_value=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=QUIET_HOOKS, randomness=dict(seed=5))
    assert_same_run(*run_both(cfg, tmp_path))


def test_custom_train_step_two_optimizers(tmp_path):
    cfg = dict(
        model=dict(type='ToyGAN'),
        train_dataloader=data(size=32, batch_size=8),
        optim_wrapper=dict(constructor='ToyGANOptimWrapperConstructor',
                           generator=dict(optimizer=dict(type='Adam', lr=2e-3, betas=(0.5, 0.999))),
                           discriminator=dict(optimizer=dict(type='SGD', lr=1e-2, momentum=0.5))),
        param_scheduler=dict(generator=dict(type='StepLR', step_size=1, gamma=0.5, by_epoch=True),
                             discriminator=dict(type='ConstantLR', factor=0.5, by_epoch=False, end=3)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=QUIET_HOOKS, randomness=dict(seed=2))
    reference, ours = run_both(cfg, tmp_path)
    assert {'loss_disc', 'loss_gen', 'lr/generator.lr', 'lr/discriminator.lr'} <= ours.iterations[0].keys()
    assert_same_run(reference, ours)


def test_runner_model_options_activation_checkpointing(tmp_path):
    cfg = dict(
        model=dict(type='ToyClassifier', dropout=0.2),
        train_dataloader=data(size=24, batch_size=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        activation_checkpointing=['net.2', 'net.3'],  # dropout and the last layer (inputs need grad)
        default_hooks=QUIET_HOOKS, randomness=dict(seed=6))
    reference, ours = run_both(cfg, tmp_path)
    assert type(ours.runner.model.net[3].forward).__name__ != 'method'  # wrapped by mmengine's checkpointing
    assert_same_run(reference, ours)
