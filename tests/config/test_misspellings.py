"""Top-level keys close to a known one are named as likely misspellings; a config's own keys are not."""
import pytest

from mm_lightning.config.misspellings import misspelt_keys
from mm_lightning.config.validation import validate_config

#: Keys mmengine reads, with values that pass validation.
KNOWN = dict(model=dict(type='ToyClassifier'), train_cfg=dict(by_epoch=True, max_epochs=1), randomness=dict(seed=0))


@pytest.mark.parametrize('key, meant', [('param_schedulr', 'param_scheduler'), ('default_hook', 'default_hooks'),
                                        ('trian_cfg', 'train_cfg'), ('visualiser', 'visualizer'),
                                        ('lighting_trainer', 'lightning_trainer')])
def test_a_top_level_key_close_to_a_known_one_is_named_with_it(key, meant):
    assert misspelt_keys({**KNOWN, key: []}) == [
        f"{key}: not a key mmengine or mm_lightning reads (the run ignores it); did you mean '{meant}'?"]
    validate_config({**KNOWN, key: []})  # a warning, never an error: configs carry keys of their own


def test_a_configs_own_keys_are_not_taken_for_typos():
    own = ['dataset_type', 'data_root', 'backend_args', 'train_pipeline', 'test_pipeline', 'img_scale', 'max_epochs',
           'base_lr', 'models', 'test100_dataloader', 'val_evaluator_abs', 'conv_cfg', 'norm_cfg', 'vis_backends',
           'env_config', '_base_', 'work_dirs']
    assert misspelt_keys({**KNOWN, **dict.fromkeys(own)}) == []
