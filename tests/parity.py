"""Run mmengine's Runner and mm_lightning's FlexibleRunner on one config and record both."""
from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mm_lightning import FlexibleRunner


class ParityRecorder(Hook):
    """Records, at every training iteration, the logged losses and every optimizer's LRs."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.iterations: List[Dict[str, Any]] = []
        self.val_metrics: List[dict] = []
        self.test_epoch_metrics: List[dict] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        record = {key: float(value) for key, value in outputs.items()}
        lrs = runner.optim_wrapper.get_lr()
        record.update({f'lr/{name}': list(values) for name, values in lrs.items()})
        record['iter'] = runner.iter
        record['epoch'] = runner.epoch
        self.iterations.append(record)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.val_metrics.append(dict(metrics or {}))

    def after_test_epoch(self, runner, metrics=None) -> None:
        # What the test loop handed its hooks: loops whose run() returns nothing (mmagic's) report only here.
        self.test_epoch_metrics.append(dict(metrics or {}))


@dataclass
class RunRecord:
    iterations: List[Dict[str, Any]]
    val_metrics: List[dict]
    weights: Dict[str, torch.Tensor]
    test_metrics: Optional[dict] = None
    runner: Any = field(default=None, repr=False)
    test_epoch_metrics: List[dict] = field(default_factory=list)


def unique_name(prefix: str) -> str:
    """An experiment name no other run of this process has: names key mmengine's global loggers and
    visualizers, and a reused one writes into the first run's (by then removed) work_dir."""
    return f'{prefix}_{uuid.uuid4().hex[:12]}'


def run(runner_cls: type, cfg: dict, work_dir: str, name: str, test: bool = False) -> RunRecord:
    cfg = copy.deepcopy(cfg)
    cfg.update(work_dir=work_dir, experiment_name=name)
    runner = runner_cls.from_cfg(cfg)
    recorder = ParityRecorder()
    runner.register_hook(recorder)
    if 'train_cfg' in cfg:
        runner.train()
    test_metrics = runner.test() if test else None
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RunRecord(recorder.iterations, recorder.val_metrics, weights, test_metrics, runner,
                     recorder.test_epoch_metrics)


def run_both(cfg: dict, tmp_path, test: bool = False, before_each: Optional[Callable[[], None]] = None):
    """(mmengine's record, ours) for ``cfg``; each in its own work_dir.

    ``before_each``, if given, is called before each runner is built: it resets process-wide state that a
    fresh process starts from and the config's seed does not reach (imgaug's global generator, say), so
    the second run does not start where the first left it.
    """
    if before_each is not None:
        before_each()
    reference = run(Runner, cfg, str(tmp_path / 'mmengine'), unique_name('mmengine'), test)
    if before_each is not None:
        before_each()
    ours = run(FlexibleRunner, cfg, str(tmp_path / 'ours'), unique_name('ours'), test)
    return reference, ours


def assert_same_run(reference: RunRecord, ours: RunRecord, atol: float = 1e-6) -> None:
    """Every iteration's losses and LRs, the validation metrics and the final weights agree."""
    assert len(ours.iterations) == len(reference.iterations) > 0
    for index, (expected, actual) in enumerate(zip(reference.iterations, ours.iterations)):
        where = f'training iteration {index} (from 0; runner.epoch {expected["epoch"]})'
        assert expected.keys() == actual.keys(), where
        for key, value in expected.items():
            if key.startswith('lr/') or key in ('iter', 'epoch'):
                assert actual[key] == value, f'{where}, {key}: mmengine {value}, ours {actual[key]}'
            else:
                assert abs(actual[key] - value) <= atol, f'{where}, {key}: mmengine {value}, ours {actual[key]}'
    assert ours.val_metrics == reference.val_metrics
    assert ours.weights.keys() == reference.weights.keys()
    for key, value in reference.weights.items():
        torch.testing.assert_close(ours.weights[key], value, atol=atol, rtol=0, msg=key)


def assert_same_checkpoint(reference_file: str, our_file: str, atol: float = 1e-6) -> None:
    """Two mmengine-format checkpoint files hold the same weights (and EMA weights) at the same epoch/iter.

    Ours must load with ``weights_only=True``; mmengine's pickles objects, so it is read in full.
    """
    reference = torch.load(reference_file, map_location='cpu', weights_only=False)
    ours = torch.load(our_file, map_location='cpu', weights_only=True)
    for key in ('epoch', 'iter'):
        assert ours['meta'][key] == reference['meta'][key], (key, reference['meta'], ours['meta'])
    for part in ('state_dict', 'ema_state_dict'):
        assert (part in ours) == (part in reference), part
        if part in reference:
            assert ours[part].keys() == reference[part].keys(), part
            for key, value in reference[part].items():
                torch.testing.assert_close(ours[part][key], value, atol=atol, rtol=0, msg=f'{part}.{key}')


def fit_with_own_trainer(cfg: dict, tmp_path, name: str, ckpt_path: Optional[str] = None, callbacks=()):
    """A Lightning user's run: ConfigModule + ConfigDataModule in a Trainer of ``trainer_kwargs``.

    Returns the module and a recorder of every iteration (as :class:`ParityRecorder`).
    """
    import lightning as L

    from mm_lightning import ConfigDataModule, ConfigModule, load_config, trainer_kwargs
    cfg = load_config(cfg, dict(work_dir=str(tmp_path / name), experiment_name=unique_name(name)))
    module = ConfigModule.from_config(cfg)
    recorder = ParityRecorder()
    module.runner.register_hook(recorder)
    kwargs = trainer_kwargs(cfg)
    kwargs['callbacks'] += list(callbacks)
    kwargs.update(enable_checkpointing=bool(callbacks))
    L.Trainer(**kwargs).fit(module, datamodule=ConfigDataModule.from_config(cfg), ckpt_path=ckpt_path)
    return module, recorder
