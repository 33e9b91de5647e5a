"""`mm-lightning explain` of configs the eight OpenMMLab repos ship: a report (exit 0, or 1 with a
refusal), never a crash, and no files written."""
import pytest

from . import compat
from .available import missing
from .shipped import check_explains, config_path, sample_configs

#: package -> its import fixes (compat), applied before asking whether it imports.
PACKAGES = {'mmdet': None, 'mmseg': None, 'mmpretrain': None, 'mmpose': compat.mmpose,
            'mmaction': compat.mmaction, 'mmocr': compat.mmocr, 'mmagic': compat.mmagic, 'mmyolo': compat.mmyolo}
PER_PACKAGE = 2


def _require(package):
    """Apply the package's import fixes, then skip, naming what is missing, where it does not import."""
    if PACKAGES[package] is not None:
        PACKAGES[package]()
    failures = missing(package)
    if failures:
        pytest.skip(f'needs {failures[0]}')


@pytest.mark.parametrize('package', list(PACKAGES))
@pytest.mark.parametrize('index', range(PER_PACKAGE))
def test_shipped_configs_are_explained(package, index, tmp_path, monkeypatch, capsys):
    _require(package)
    monkeypatch.chdir(tmp_path)
    check_explains(sample_configs(package, PER_PACKAGE)[index], capsys)


#: The shipped configs the conformance suite trains (tests/openmmlab/small_configs*.py), and mmdet's SoftTeacher
#: configs, whose val_cfg names a loop (TeacherStudentValLoop) registered in mmdet.engine.
TRAINED = {
    'mmdet': ['faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'retinanet/retinanet_r50_fpn_1x_coco.py',
              'rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
              *[f'soft_teacher/soft-teacher_faster-rcnn_r50-caffe_fpn_180k_semi-{fraction}-coco.py'
                for fraction in ('0.01', '0.02', '0.05', '0.1')]],
    'mmseg': ['segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py'],
    'mmpretrain': ['resnet/resnet18_8xb16_cifar10.py', 'resnet/resnet18_8xb32_in1k.py'],
    'mmpose': ['body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py',
               'body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py'],
    'mmaction': ['recognition/tsn/tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow.py',
                 'recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py'],
    'mmocr': ['textdet/dbnet/dbnet_resnet18_fpnc_1200e_icdar2015.py', 'textrecog/crnn/crnn_mini-vgg_5e_mj.py'],
    'mmagic': ['wgan-gp/wgangp_GN_1xb64-160kiters_celeba-cropped-128x128.py',
               'srcnn/srcnn_x4k915_1xb16-1000k_div2k.py'],
    'mmyolo': ['yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py', 'yolov8/yolov8_s_syncbn_fast_8xb16-500e_coco.py',
               'yolox/yolox_tiny_fast_8xb8-300e_coco.py'],
}


@pytest.mark.parametrize('package, relative', [(package, relative) for package, paths in TRAINED.items()
                                               for relative in paths])
def test_explain_refuses_no_config_the_suite_trains(package, relative, tmp_path, monkeypatch):
    """explain says what the run does: a config that trains gets no refusal (its scope's registrations seen,
    as the run sees them). explain builds no model and no data, so the shipped config is explained as it is."""
    from mm_lightning.tools.explain import REFUSAL, explain
    _require(package)
    monkeypatch.chdir(tmp_path)
    report = explain(config_path(package, relative), launcher='none', accelerator='cpu', devices=1, num_nodes=1)
    assert [entry['message'] for entry in report['warnings'] if entry['kind'] == REFUSAL] == []
