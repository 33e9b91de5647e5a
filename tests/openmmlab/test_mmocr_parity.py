"""mmocr 1.0's shipped DBNet and CRNN configs on synthetic ICDAR 2015 / MJSynth-style sets: both runners agree."""
import os

from parity import assert_same_checkpoint, assert_same_run, run_both

from . import compat
from .available import requires
from .shipped import override
from .small_configs_tasks import CRNN_BENCHMARKS, crnn_mj_config, dbnet_r18_icdar2015_config

compat.mmocr()
pytestmark = requires('mmocr.datasets', 'mmocr.models', 'mmocr.evaluation', 'mmcv.ops')


def fresh_imgaug() -> None:
    """imgaug draws from a process-wide generator, made from numpy's (seeded) state at first use and never
    reseeded by mmengine: a second run in the same process would start where the first left it."""
    import imgaug.random
    imgaug.random.GLOBAL_RNG = None


def test_dbnet_r18_icdar2015(icdar2015_textdet_root, tmp_path):
    """DBNet: colour jitter (torchvision), flip/rotate/rescale (imgaug) and mmocr's random crop of polygons,
    ResNet-18 + FPNC, probability/threshold/binary losses, SGD with poly LR, ICDAR hmean after every epoch."""
    cfg = override(dbnet_r18_icdar2015_config(icdar2015_textdet_root), {
        'train_cfg.max_epochs': 3, 'train_cfg.val_interval': 1, 'param_scheduler.0.end': 3})
    reference, ours = run_both(cfg, tmp_path, test=True, before_each=fresh_imgaug)
    assert len(reference.iterations) == 3 * 2 and len(reference.val_metrics) == 3  # 4 images, batches of 2
    assert 'icdar/hmean' in reference.val_metrics[0]
    assert_same_run(reference, ours)
    assert ours.test_metrics == reference.test_metrics
    # interval 20: only the last epoch is saved
    assert_same_checkpoint(os.path.join(reference.runner.work_dir, 'epoch_3.pth'),
                           os.path.join(ours.runner.work_dir, 'epoch_3.pth'))


def test_crnn_multi_datasets_evaluator(textrecog_roots, tmp_path):
    """CRNN (MiniVGG + BiLSTM, CTC) with Adadelta; validated on six test sets concatenated, scored per set by
    mmocr's ``MultiDatasetsEvaluator`` (an mmengine ``Evaluator`` subclass) under the config's prefixes."""
    train_root, test_roots = textrecog_roots
    cfg = override(crnn_mj_config(train_root, test_roots), {'train_cfg.max_epochs': 2})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == 2 * 2 and len(reference.val_metrics) == 2  # 8 words, batches of 4
    prefixes = {name.split('/')[0] for name in reference.val_metrics[0]}
    assert prefixes == {prefix for prefix, _ in CRNN_BENCHMARKS}
    assert_same_run(reference, ours)
    assert ours.test_metrics == reference.test_metrics
    for epoch in (1, 2):  # interval 1
        assert_same_checkpoint(os.path.join(reference.runner.work_dir, f'epoch_{epoch}.pth'),
                               os.path.join(ours.runner.work_dir, f'epoch_{epoch}.pth'))
