"""A downstream-style package with its own registry scope (like mmpretrain or mmdet)."""
from mmengine.optim import DefaultOptimWrapperConstructor
from toy import ToyClassifier

from .registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS


@MODELS.register_module(force=True)
class ScopedClassifier(ToyClassifier):
    """Registered only in the ``toyscope`` scope: found only when default_scope selects it."""


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class ScopedConstructor(DefaultOptimWrapperConstructor):
    """An optimizer constructor of the scope, as mmyolo's YOLOv5OptimizerConstructor is mmyolo's."""
