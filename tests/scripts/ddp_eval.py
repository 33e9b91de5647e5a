"""Validate on 13 samples with FlexibleRunner under torchrun (2 processes, gloo) and dump the metrics.

    torchrun --nproc_per_node=2 tests/scripts/ddp_eval.py OUT.json WORK_DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import toy  # noqa: E402,F401

from mm_lightning import FlexibleRunner  # noqa: E402

EVAL_CFG = dict(
    model=dict(type='ToyClassifier'),
    val_dataloader=dict(dataset=dict(type='BlobDataset', size=13, seed=1),
                        sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2, num_workers=0),
    val_cfg=dict(),
    val_evaluator=[dict(type='ToyAccuracy'),
                   dict(type='torchmetrics.classification.MulticlassAccuracy', num_classes=3, average='micro',
                        input_keys=dict(preds='pred', target='label'), prefix='tm'),
                   dict(type='DumpResults', out_file_path='PLACEHOLDER')],
    randomness=dict(seed=5),
    env_cfg=dict(dist_cfg=dict(backend='gloo')),
)


def config(work_dir, launcher):
    cfg = dict(EVAL_CFG, work_dir=work_dir, launcher=launcher, experiment_name=f'ddp_eval_{launcher}')
    cfg['val_evaluator'] = [dict(m) for m in cfg['val_evaluator']]
    cfg['val_evaluator'][2]['out_file_path'] = os.path.join(work_dir, 'dump.pkl')
    return cfg


if __name__ == '__main__':
    out, work_dir = sys.argv[1], sys.argv[2]
    runner = FlexibleRunner.from_cfg(config(work_dir, 'pytorch'))
    metrics = runner.val()
    if runner.rank == 0:
        with open(out, 'w') as f:
            json.dump(dict(metrics=metrics, world_size=runner.world_size), f)
