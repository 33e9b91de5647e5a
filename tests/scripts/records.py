"""What the test scripts that launch runs record of them: each rank's iterations and validations, and its whole
state (imported from beside them: a script's own directory is on its ``sys.path``)."""
import json
import os

from mmengine.hooks import Hook

__all__ = ['Recorder', 'full_state']


class Recorder(Hook):
    """Appends to ``path`` one JSON line per training iteration (losses, LRs, ``batch_idx``) and per validation
    (metrics), each written through to the disk at once: a killed process keeps what it recorded."""

    priority = 'LOWEST'

    def __init__(self, path):
        self.path = path

    def _write(self, record):
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        record = {key: float(value) for key, value in outputs.items()}
        record.update({f'lr/{k}': v for k, v in runner.optim_wrapper.get_lr().items()})
        self._write(dict(kind='iter', iter=runner.iter, epoch=runner.epoch, batch_idx=batch_idx, **record))

    def after_val_epoch(self, runner, metrics=None):
        self._write(dict(kind='val', iter=runner.iter, epoch=runner.epoch,
                         metrics={key: float(value) for key, value in (metrics or {}).items()}))


def full_state(model):
    """The model's whole state on every rank: FSDP's shards and ZeRO-3's partitions gathered (a collective)."""
    from torch.distributed.tensor import DTensor
    if any(hasattr(param, 'ds_id') for param in model.parameters()):  # ZeRO-3's partitioned parameters
        import deepspeed
        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            return {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
            for k, v in model.state_dict().items()}
