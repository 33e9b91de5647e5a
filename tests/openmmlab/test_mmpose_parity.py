"""mmpose 1.3's shipped top-down configs on a synthetic COCO-keypoints set: both runners agree."""
import os

from parity import assert_same_checkpoint, assert_same_run, run_both

from . import compat
from .available import requires
from .shipped import override
from .small_configs_tasks import rtmpose_t_config, topdown_heatmap_res50_config

compat.mmpose()
pytestmark = requires('mmpose.datasets', 'mmpose.models', 'mmpose.evaluation', 'xtcocotools.cocoeval')


def assert_same_checkpoints(reference, ours, names) -> None:
    for name in names:
        assert_same_checkpoint(os.path.join(reference.runner.work_dir, name), os.path.join(ours.runner.work_dir, name))


def test_topdown_heatmap_res50(coco_keypoints_root, tmp_path):
    """SimpleBaseline: ResNet-50, MSRA heatmaps, flip/half-body/affine augmentation, Adam with a linear warmup
    per iteration then a step per epoch, COCO keypoint AP (flip test) after every epoch, best-AP checkpoint."""
    cfg = override(topdown_heatmap_res50_config(coco_keypoints_root), {
        'train_cfg.max_epochs': 2, 'train_cfg.val_interval': 1,
        'param_scheduler.0.end': 3, 'param_scheduler.1.end': 2, 'param_scheduler.1.milestones': [1]})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == 2 * 2 and len(reference.val_metrics) == 2  # 8 people, batches of 4
    assert 'coco/AP' in reference.val_metrics[0]
    assert_same_run(reference, ours)
    assert ours.test_metrics == reference.test_metrics
    # interval 10: the last epoch, and the first (best) epoch for coco/AP
    assert_same_checkpoints(reference, ours, ('epoch_2.pth', 'best_coco_AP_epoch_1.pth'))


@requires('mmdet.models', 'albumentations')
def test_rtmpose_t_pipeline_switch(coco_keypoints_root, tmp_path):
    """RTMPose-t: CSPNeXt (mmdet scope) and an RTMCC head on SimCC labels, mmdet's HSV augmentation and
    albumentations' blur/dropout, AdamW without decay on norms and biases, warmup then cosine per iteration,
    the stage-2 pipeline switched in by mmdet's ``PipelineSwitchHook``."""
    cfg = override(rtmpose_t_config(coco_keypoints_root), {
        'train_cfg.max_epochs': 3, 'train_cfg.val_interval': 1, 'custom_hooks.0.switch_epoch': 2,
        'param_scheduler.0.end': 3, 'param_scheduler.1.begin': 1, 'param_scheduler.1.end': 3,
        'param_scheduler.1.T_max': 2})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == 3 * 2 and len(reference.val_metrics) == 3
    for record in (reference, ours):  # both train the last epoch on the stage-2 pipeline
        bbox_transform = record.runner.train_dataloader.dataset.pipeline.transforms[4]
        assert type(bbox_transform).__name__ == 'RandomBBoxTransform' and bbox_transform.shift_factor == 0.
    assert_same_run(reference, ours)
    assert ours.test_metrics == reference.test_metrics
    assert_same_checkpoints(reference, ours, ('epoch_3.pth',))
