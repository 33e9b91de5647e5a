# An mmengine FlexibleRunner config sharded by FSDPStrategy: FSDP2 on Lightning's ModelParallelStrategy,
# here on 2 CPU processes over gloo:
#   PYTHONPATH=tests torchrun --nproc_per_node=2 -m mm_lightning train tests/configs/fsdp_toy.py --launcher pytorch
custom_imports = dict(imports=['toy'], allow_failed_imports=False)
model = dict(type='ToyClassifier', hidden=32)
train_dataloader = dict(dataset=dict(type='BlobDataset', size=64, seed=0), batch_size=4, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(dataset=dict(type='BlobDataset', size=13, seed=1), batch_size=4, num_workers=0,
                      sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='ToyAccuracy')
val_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.01), clip_grad=dict(max_norm=1.0))
param_scheduler = dict(type='CosineAnnealingLR', T_max=16, by_epoch=False)
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
default_hooks = dict(logger=dict(type='LoggerHook', interval=1), checkpoint=dict(type='CheckpointHook', interval=1))
strategy = dict(
    type='FSDPStrategy', state_dict_cfg='full',
    model_wrapper=dict(sharding_strategy='FULL_SHARD',
                       auto_wrap_policy=dict(type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
                                             min_num_params=100)))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=3)
