"""Weights that do not fit the model: an error where using them would be silently wrong, one line elsewhere."""
import copy
import os
from collections import OrderedDict

import pytest
import torch
from conftest import data
from mmengine.model import BaseTTAModel
from toy import ToyClassifier

from mm_lightning import ConfigError, FlexibleRunner
from mm_lightning.state.weights import fit_of

MODEL = dict(type='ToyClassifier', batch_norm=True)  # net.0 Linear, net.1 BatchNorm1d, net.4 Linear: 9 tensors
EVAL = dict(model=MODEL, randomness=dict(seed=3),
            test_dataloader=data(size=8, seed=2, shuffle=False), test_evaluator=dict(type='ToyAccuracy'),
            test_cfg=dict(),
            val_dataloader=data(size=8, seed=1, shuffle=False), val_evaluator=dict(type='ToyAccuracy'), val_cfg=dict())
TRAIN = dict(EVAL, train_dataloader=data(size=8, batch_size=4), train_cfg=dict(by_epoch=True, max_epochs=1),
             optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
             default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100)))


def _runner(tmp_path, name, cfg, **changes):
    return FlexibleRunner.from_cfg(dict(copy.deepcopy(cfg), work_dir=str(tmp_path / name),
                                        experiment_name=f'{name}_{tmp_path.name}', **changes))


def _save(tmp_path, name, state_dict):
    path = str(tmp_path / name)
    torch.save({'meta': {}, 'state_dict': state_dict}, path)
    return path


def _log(runner):
    with open(os.path.join(runner.log_dir, f'{os.path.basename(runner.log_dir)}.log')) as f:
        return f.read()


def _state(**model):
    torch.manual_seed(0)
    return ToyClassifier(**model).state_dict()


@pytest.fixture
def files(tmp_path):
    return dict(
        exact=_save(tmp_path, 'exact.pth', _state(batch_norm=True)),
        none=_save(tmp_path, 'other_model.pth', OrderedDict((f'backbone.{k}', v) for k, v in _state().items())),
        # without the BatchNorm the last Linear is net.3: net.0 fits, net.1 and net.4 are missing
        partial=_save(tmp_path, 'no_bn.pth', _state()),
        shapes=_save(tmp_path, 'four_classes.pth', _state(batch_norm=True, num_classes=4)))


@pytest.mark.parametrize('stage', ['test', 'val'])
def test_evaluating_weights_that_fit_none_of_the_model_is_an_error(stage, files, tmp_path):
    runner = _runner(tmp_path, stage, EVAL, load_from=files['none'])
    with pytest.raises(ConfigError) as error:
        getattr(runner, stage)()
    assert str(error.value) == (
        f"load_from: the checkpoint's weights fit none of the model's tensors: loaded 0 of 8 tensors from "
        f"{files['none']}; missing (8): net.0.weight, net.0.bias, net.1.weight, ...; unexpected (4): "
        'backbone.net.0.weight, backbone.net.0.bias, backbone.net.3.weight, ...')


def test_evaluating_weights_that_fit_part_of_the_model_is_an_error(files, tmp_path):
    with pytest.raises(ConfigError, match=r"^load_from: the checkpoint's weights do not fit the model: loaded 2 of "
                                          r'8 tensors from .*no_bn.pth; missing \(6\): net.1.weight, net.1.bias, '
                                          r'net.1.running_mean, ...; unexpected \(2\): net.3.weight, net.3.bias$'):
        _runner(tmp_path, 'partial', EVAL, load_from=files['partial']).test()


def test_a_tensor_of_another_shape_is_not_loaded(files, tmp_path):
    with pytest.raises(ConfigError, match=r'loaded 7 of 9 tensors from .*four_classes.pth; shape mismatch \(2\): '
                                          r'net.4.weight \(file \(4, 16\), model \(3, 16\)\), net.4.bias'):
        _runner(tmp_path, 'shapes', EVAL, load_from=files['shapes']).test()


def test_weights_that_fit_evaluate_as_before(files, tmp_path):
    runner = _runner(tmp_path, 'exact', EVAL, load_from=files['exact'])
    runner.test()
    assert torch.equal(runner.model.net[4].weight, torch.load(files['exact'])['state_dict']['net.4.weight'])
    assert 'does not fit' not in _log(runner)


def test_evaluating_with_extra_tensors_in_the_file_is_one_line(tmp_path):
    """Every model tensor comes from the file (say a training-only head it also holds): the evaluation is right."""
    extra = _save(tmp_path, 'with_aux_head.pth', OrderedDict(_state(batch_norm=True), **{'aux.weight': torch.ones(2)}))
    runner = _runner(tmp_path, 'extra', EVAL, load_from=extra)
    runner.test()
    assert f'loaded 9 of 9 tensors from {extra}; unexpected (1): aux.weight' in _log(runner)


def test_load_from_before_training_fine_tunes_from_a_partial_fit_with_one_line(files, tmp_path):
    runner = _runner(tmp_path, 'fine_tune', TRAIN, load_from=files['partial'])
    runner.train()
    lines = [line for line in _log(runner).splitlines() if 'tensors from' in line]
    assert len(lines) == 1 and lines[0].endswith(
        f"The checkpoint does not fit the model exactly: loaded 2 of 8 tensors from {files['partial']}; missing (6): "
        'net.1.weight, net.1.bias, net.1.running_mean, ...; unexpected (2): net.3.weight, net.3.bias')
    assert 'The model and loaded state dict do not match exactly' not in _log(runner)  # mmengine's key list


def test_load_from_before_training_that_fits_nothing_is_an_error(files, tmp_path):
    with pytest.raises(ConfigError, match=r"fit none of the model's tensors: loaded 0 of 8 tensors from "
                                          r'.*other_model.pth; missing \(8\)'):
        _runner(tmp_path, 'none', TRAIN, load_from=files['none']).train()


def test_load_checkpoint_keeps_mmengine_semantics(files, tmp_path):
    runner = _runner(tmp_path, 'explicit', TRAIN)
    before = runner.model.net[4].weight.detach().clone()
    runner.load_checkpoint(files['none'])  # non-strict: loads nothing, says so
    assert torch.equal(runner.model.net[4].weight, before)
    assert 'loaded 0 of 8 tensors from' in _log(runner)
    runner.load_checkpoint(files['partial'])
    assert torch.equal(runner.model.net[0].weight, torch.load(files['partial'])['state_dict']['net.0.weight'])
    with pytest.raises(RuntimeError, match='do not match exactly'):  # mmengine's strict loading
        runner.load_checkpoint(files['partial'], strict=True)


def test_revise_keys_is_applied_before_the_fit(files, tmp_path):
    runner = _runner(tmp_path, 'revise', TRAIN)
    runner.load_checkpoint(files['none'], revise_keys=[(r'^backbone\.', '')])  # the non-BN model's weights
    assert 'loaded 2 of 8 tensors' in _log(runner)
    ddp_saved = _save(tmp_path, 'ddp.pth', OrderedDict((f'module.{k}', v) for k, v in _state(batch_norm=True).items()))
    _runner(tmp_path, 'module_prefix', EVAL, load_from=ddp_saved).test()  # mmengine's default revise_keys


def test_the_fit_is_measured_against_the_model_mmengine_loads_into():
    class MergingTTA(BaseTTAModel):
        def merge_preds(self, data_samples_list):
            return data_samples_list[0]

    wrapped = MergingTTA(module=ToyClassifier(batch_norm=True))
    assert fit_of(wrapped, _state(batch_norm=True)).exact  # mmengine loads into the wrapped model
