# Three-arm spiral classification: an epoch-based mmengine config.
#   python -m mm_lightning train examples/spiral/mlp_spiral.py
_base_ = ['./base.py']
custom_imports = dict(imports=['examples.spiral.components'], allow_failed_imports=False)

model = dict(type='SpiralClassifier', hidden=64, depth=3)

train_dataloader = dict(
    batch_size=32, num_workers=0,
    dataset=dict(type='SpiralDataset', split='train'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'))
val_dataloader = dict(
    batch_size=64, num_workers=0,
    dataset=dict(type='SpiralDataset', split='val'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'))
test_dataloader = val_dataloader
val_evaluator = dict(type='SpiralAccuracy')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=0.01, weight_decay=1e-4),
                     clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, T_max=19, eta_min=1e-4),
]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=2)
val_cfg = dict()
test_cfg = dict()
