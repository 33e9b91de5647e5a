"""mmsegmentation 1.2's shipped SegFormer-B0 ADE20K config (iteration-based): both runners agree."""
import os

from parity import assert_same_checkpoint, assert_same_run, run_both

from .available import requires
from .shipped import override
from .small_configs import segformer_b0_config

pytestmark = requires('mmseg.datasets', 'mmseg.models')


def test_segformer_mit_b0_ade20k_iteration_based(ade20k_root, tmp_path):
    """Infinite sampler, AdamW with paramwise multipliers, iteration warmup then poly LR, validation every
    4 iterations, drop path and dropout (the same random draws under both runners)."""
    cfg = segformer_b0_config(ade20k_root)
    assert cfg.train_dataloader.sampler.type == 'InfiniteSampler'
    override(cfg, {'train_cfg.max_iters': 10, 'train_cfg.val_interval': 4,
                   'param_scheduler.0.end': 3, 'param_scheduler.1.begin': 3, 'param_scheduler.1.end': 10})
    reference, ours = run_both(cfg, tmp_path)
    assert len(reference.iterations) == 10
    assert len(reference.val_metrics) == 3  # iterations 4, 8 and the last one
    assert 0 < reference.val_metrics[-1]['mIoU'] <= 100
    assert_same_run(reference, ours)
    # interval 16000: only the last iteration is saved
    assert_same_checkpoint(os.path.join(reference.runner.work_dir, 'iter_10.pth'),
                           os.path.join(ours.runner.work_dir, 'iter_10.pth'))
