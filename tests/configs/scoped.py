_base_ = ['./base_runtime.py']
default_scope = 'toyscope'
custom_imports = dict(imports=['toy', 'toyscope.models'], allow_failed_imports=False)
model = dict(type='ScopedClassifier', batch_norm=True)
train_dataloader = dict(dataset=dict(type='BlobDataset', size=24), sampler=dict(type='DefaultSampler', shuffle=True),
                        batch_size=6, num_workers=0)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
train_cfg = dict(by_epoch=True, max_epochs=2)
