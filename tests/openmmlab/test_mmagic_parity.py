"""mmagic 1.2's shipped configs (default_scope ``mmagic``): mmengine's Runner and FlexibleRunner agree.

What mmagic brings: ``MultiValLoop``/``MultiTestLoop``, which build their evaluators through
``runner.build_evaluator`` and need mmagic's ``Evaluator`` (``prepare_metrics``, ``prepare_samplers``:
generative metrics draw their own samples from the model), report metrics only to the
``after_*_epoch`` hooks (their ``run()`` returns nothing) and accept LISTS of dataloaders and
evaluators; ``MultiOptimWrapperConstructor`` (a GAN's generator and discriminator optimizers, each
stepped inside the model's own ``train_step``); ``model_wrapper_cfg``, which mmengine ignores in a
single process.
"""
import os

from parity import assert_same_checkpoint, assert_same_run, run_both

from . import compat
from .available import requires
from .shipped import override
from .small_configs_mmagic import srcnn_config, wgangp_config

compat.mmagic()
pytestmark = requires('mmagic.models', 'mmagic.datasets', 'mmagic.evaluation', 'mmagic.engine', 'mmcv.ops')


def checkpoints(record) -> list:
    return sorted(name for name in os.listdir(record.runner.work_dir) if name.endswith('.pth'))


def assert_same_test(reference, ours) -> None:
    """The same return value of ``test()`` (None for mmagic's loops) and the same metrics for the hooks."""
    assert ours.test_metrics == reference.test_metrics
    assert ours.test_epoch_metrics == reference.test_epoch_metrics and len(reference.test_epoch_metrics) == 1


def test_wgangp_multi_optimizers_multi_val_loop_generative_metrics(gan_image_folder, tmp_path):
    """WGAN-GP, iteration-based: 5 critic updates per generator update (the generator steps at
    iteration 5), two Adam optimizers from ``MultiOptimWrapperConstructor``, validation every 3
    iterations by ``MultiValLoop`` with MS-SSIM and SWD on samples the model generates, the best
    checkpoint by ``swd/avg``, then ``MultiTestLoop``."""
    cfg = override(wgangp_config(gan_image_folder), {
        'train_cfg.max_iters': 6, 'train_cfg.val_interval': 3,
        'train_dataloader.batch_size': 2, 'val_dataloader.batch_size': 2, 'test_dataloader.batch_size': 2})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == 6 and len(reference.val_metrics) == 2
    assert [index for index, record in enumerate(reference.iterations) if 'loss_gen' in record] == [4]
    assert {'lr/generator.lr', 'lr/discriminator.lr'} <= reference.iterations[0].keys()
    assert {'ms-ssim/avg', 'swd/avg'} <= reference.val_metrics[0].keys()
    assert_same_run(reference, ours)
    assert checkpoints(ours) == checkpoints(reference) == ['best_swd_avg_iter_6.pth', 'iter_6.pth']
    for name in checkpoints(reference):
        assert_same_checkpoint(os.path.join(reference.runner.work_dir, name), os.path.join(ours.runner.work_dir, name))
    assert_same_test(reference, ours)


def test_srcnn_list_of_test_dataloaders(sisr_x4_root, tmp_path):
    """SRCNN x4, iteration-based: cosine-restart LR, Set5 validation every 3 iterations through
    ``MultiValLoop`` (MAE, PSNR, SSIM), the best checkpoint by PSNR in the checkpoint hook's
    ``out_dir``, then ``MultiTestLoop`` over the config's LIST of three test loaders (Set5, Set14,
    DIV2K), each with its own evaluator and metric prefix."""
    out_dir = str(tmp_path / 'checkpoints')
    cfg = override(srcnn_config(sisr_x4_root, out_dir), {
        'train_cfg.max_iters': 6, 'train_cfg.val_interval': 3, 'param_scheduler.periods': [3, 3, 3, 3]})
    reference, ours = run_both(cfg, tmp_path, test=True)
    assert len(reference.iterations) == 6 and len(reference.val_metrics) == 2
    assert {'MAE', 'PSNR', 'SSIM'} == reference.val_metrics[0].keys()
    assert_same_run(reference, ours)
    tested = reference.test_epoch_metrics[0]
    assert {key.split('/')[0] for key in tested} == {'Set5', 'Set14', 'DIV2K'}
    assert_same_test(reference, ours)
    # CheckpointHook writes to out_dir/<work_dir's name>.
    reference_dir, our_dir = (os.path.join(out_dir, os.path.basename(r.runner.work_dir)) for r in (reference, ours))
    names = sorted(os.listdir(reference_dir))
    assert sorted(os.listdir(our_dir)) == names and 'iter_6.pth' in names
    for name in names:
        if name.endswith('.pth'):
            assert_same_checkpoint(os.path.join(reference_dir, name), os.path.join(our_dir, name))
