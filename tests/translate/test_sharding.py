"""The FSDP2 plan: which submodules get their own ``fully_shard`` (FSDP1's auto-wrap walk)."""
from functools import partial

from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy, size_based_auto_wrap_policy

from mm_lightning.translate.sharding import wrap_targets


def _model():
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 3)))


def test_size_based_policy_wraps_what_fsdp1_wraps():
    model = _model()
    # 4160 parameters in model[2][0] reach the threshold; model[2] keeps 195 unwrapped; the root is sharded anyway
    assert wrap_targets(model, partial(size_based_auto_wrap_policy, min_num_params=1000)) == [model[2][0]]
    assert wrap_targets(model, partial(size_based_auto_wrap_policy, min_num_params=100)) == [
        model[0], model[2][0], model[2][1]]


def test_module_class_policy_wraps_children_before_parents_and_skips_ignored_modules():
    model = _model()
    policy = ModuleWrapPolicy({nn.Linear, nn.Sequential})
    assert wrap_targets(model, policy) == [model[0], model[2][0], model[2][1], model[2]]
    assert wrap_targets(model, policy, ignored=(model[2],)) == [model[0]]
    assert wrap_targets(model, None) == []
