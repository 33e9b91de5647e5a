"""OpenMMLab conformance suite: shipped configs of mmdet, mmseg, mmpretrain, mmpose, mmaction2, mmocr,
mmyolo and mmagic under both runners.

These packages are not dependencies of mm_lightning (mmcv's compiled ops need a wheel built
for the installed torch, several need torchvision; ``.ci/install-openmmlab`` installs them, with
the import fixes of :mod:`compat`). Each test module names what it needs
(``available.requires``) and is skipped, with the reason, where that does not import; the
fixtures below import nothing of OpenMMLab until a test asks for them.
"""
import pytest


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory):
    from .synthetic import write_coco
    return write_coco(str(tmp_path_factory.mktemp('coco')))


@pytest.fixture(scope='session')
def ade20k_root(tmp_path_factory):
    from .synthetic import write_ade20k
    return write_ade20k(str(tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016'))


@pytest.fixture(scope='session')
def cifar10_root(tmp_path_factory):
    from .synthetic import write_cifar10
    return write_cifar10(str(tmp_path_factory.mktemp('cifar10')))


@pytest.fixture
def cifar10_unchecked(cifar10_root, monkeypatch):
    """The synthetic CIFAR-10 root, with ``CIFAR10``'s checksums of the released files switched off.

    The dataset compares every pickle's md5 with the released archive's and tries to download
    it on a mismatch; it skips the comparison for entries whose md5 is ``None``.
    """
    from mmpretrain.datasets import CIFAR10
    for name in ('train_list', 'test_list'):
        monkeypatch.setattr(CIFAR10, name, [[filename, None] for filename, _ in getattr(CIFAR10, name)])
    monkeypatch.setattr(CIFAR10, 'meta', dict(CIFAR10.meta, md5=None))
    return cifar10_root


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory):
    from .synthetic import write_imagenet
    return write_imagenet(str(tmp_path_factory.mktemp('imagenet')))


@pytest.fixture(scope='session')
def coco_keypoints_root(tmp_path_factory):
    from .synthetic_pose import write_coco_keypoints
    return write_coco_keypoints(str(tmp_path_factory.mktemp('coco_keypoints')))


@pytest.fixture(scope='session')
def flow_rawframes_root(tmp_path_factory):
    from .synthetic_action import write_rawframes
    return write_rawframes(str(tmp_path_factory.mktemp('kinetics_flow')), modality='Flow')


@pytest.fixture(scope='session')
def videos_root(tmp_path_factory):
    from .synthetic_action import write_videos
    return write_videos(str(tmp_path_factory.mktemp('kinetics_videos')))


@pytest.fixture(scope='session')
def torchvision_resnet50_file(tmp_path_factory):
    """A torchvision ResNet-50 ``state_dict`` at its own random initialisation (seed 0), in place of the
    ImageNet weights that configs name with ``pretrained``: their 2D-to-video conversion code runs on it."""
    import torch
    import torchvision
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp('weights') / 'resnet50_random_init.pth')
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


@pytest.fixture(scope='session')
def icdar2015_textdet_root(tmp_path_factory):
    from .synthetic_ocr import write_icdar2015_textdet
    return write_icdar2015_textdet(str(tmp_path_factory.mktemp('icdar2015')))


@pytest.fixture(scope='session')
def textrecog_roots(tmp_path_factory):
    """(MJSynth-like training root, {benchmark name: root}) for mmocr's recognition configs."""
    from .small_configs_tasks import CRNN_BENCHMARKS
    from .synthetic_ocr import write_textrecog, write_textrecog_benchmarks
    root = tmp_path_factory.mktemp('textrecog')
    return (write_textrecog(str(root / 'mjsynth'), train=8, test=0),
            write_textrecog_benchmarks(str(root), [name for _, name in CRNN_BENCHMARKS], seed=1))


@pytest.fixture(scope='session')
def gan_image_folder(tmp_path_factory):
    from .synthetic_mmagic import write_image_folder
    return write_image_folder(str(tmp_path_factory.mktemp('gan_images')))


@pytest.fixture(scope='session')
def sisr_x4_root(tmp_path_factory):
    from .synthetic_mmagic import write_sisr_x4
    return write_sisr_x4(str(tmp_path_factory.mktemp('sisr_x4')))


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """Train with one intra-op thread. These models run many small ops; on a 2-core machine shared
    with other work a second thread mostly waits for the busy core (4x slower, measured)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
