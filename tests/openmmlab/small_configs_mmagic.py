"""mmagic 1.2's shipped configs on the synthetic image sets, shrunk to run in seconds.

Only what :mod:`shipped` allows changes: paths (data roots, the checkpoint ``out_dir``), image sizes
(the resize, the GAN's output/input scales and the metrics' image shape, the crop size), batch sizes
and workers, sample counts of the generative metrics; schedule lengths in the tests.
"""
from __future__ import annotations

from mmengine.config import Config

from .shipped import no_workers, override, set_transform, shipped_config

GAN_SIZE = 32


def _loaders(cfg: Config, name: str) -> list:
    """The config's ``name`` loaders (a dict or a list of them) as a list."""
    loaders = cfg[name]
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def _no_workers(cfg: Config) -> None:
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for loader in _loaders(cfg, name):
            loader['num_workers'] = 0
            if 'persistent_workers' in loader:
                loader['persistent_workers'] = False


def wgangp_config(image_root: str) -> Config:
    """WGAN-GP (GroupNorm critic, 5 critic steps per generator step) at 32 px, batches of 4: its
    ``MultiValLoop``/``MultiTestLoop``, mmagic's ``Evaluator`` with MS-SSIM and sliced Wasserstein
    distance (neither needs downloaded weights), two Adam optimizers."""
    cfg = shipped_config('mmagic', 'wgan-gp/wgangp_GN_1xb64-160kiters_celeba-cropped-128x128.py')
    assert cfg.val_cfg.type == 'MultiValLoop' and cfg.test_cfg.type == 'MultiTestLoop'
    assert cfg.val_evaluator.type == 'Evaluator' and cfg.model_wrapper_cfg.type == 'MMSeparateDistributedDataParallel'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        override(cfg, {f'{name}.dataset.data_root': image_root, f'{name}.batch_size': 4})
        set_transform(cfg[name].dataset.pipeline, 'Resize', scale=(GAN_SIZE, GAN_SIZE))
    no_workers(cfg, 'train_dataloader', 'val_dataloader', 'test_dataloader')
    override(cfg, {'model.generator.out_scale': GAN_SIZE, 'model.discriminator.in_scale': GAN_SIZE})
    for evaluator in ('val_evaluator', 'test_evaluator'):
        metrics = cfg[evaluator].metrics
        assert [m.type for m in metrics] == ['MS_SSIM', 'SWD']
        override(cfg, {f'{evaluator}.metrics.0.fake_nums': 4, f'{evaluator}.metrics.1.fake_nums': 8,
                       f'{evaluator}.metrics.1.image_shape': (3, GAN_SIZE, GAN_SIZE)})
    return cfg


def srcnn_config(sisr_root: str, out_dir: str) -> Config:
    """SRCNN x4 on the synthetic DIV2K (training, 32 px crops, batches of 2) with Set5 validation through
    ``MultiValLoop`` and mmagic's ``Evaluator``, and ``MultiTestLoop`` over a LIST of three test loaders
    (Set5, Set14, DIV2K), each with its own evaluator."""
    cfg = shipped_config('mmagic', 'srcnn/srcnn_x4k915_1xb16-1000k_div2k.py')
    assert cfg.val_cfg.type == 'MultiValLoop' and cfg.test_cfg.type == 'MultiTestLoop'
    assert isinstance(cfg.test_dataloader, list) and len(cfg.test_dataloader) == len(cfg.test_evaluator) == 3
    override(cfg, {'train_dataloader.dataset.data_root': f'{sisr_root}/DIV2K', 'train_dataloader.batch_size': 2,
                   'val_dataloader.dataset.data_root': f'{sisr_root}/Set5',
                   'test_dataloader.0.dataset.data_root': f'{sisr_root}/Set5',
                   'test_dataloader.1.dataset.data_root': f'{sisr_root}/Set14',
                   'test_dataloader.2.dataset.data_root': f'{sisr_root}/DIV2K',
                   'default_hooks.checkpoint.out_dir': out_dir})
    set_transform(cfg.train_dataloader.dataset.pipeline, 'PairedRandomCrop', gt_patch_size=32)
    _no_workers(cfg)
    return cfg
