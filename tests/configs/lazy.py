# A pure-Python (lazy import) config: types are the classes themselves.
from mmengine.dataset import DefaultSampler
from torch.optim import SGD
from toy import BlobDataset, ToyClassifier

model = dict(type=ToyClassifier)
train_dataloader = dict(dataset=dict(type=BlobDataset, size=24), sampler=dict(type=DefaultSampler, shuffle=True),
                        batch_size=6, num_workers=0)
optim_wrapper = dict(optimizer=dict(type=SGD, lr=0.1))
train_cfg = dict(by_epoch=True, max_epochs=1)
randomness = dict(seed=1)
