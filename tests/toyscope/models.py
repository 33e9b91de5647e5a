from toy import ToyClassifier

from .registry import MODELS


@MODELS.register_module(force=True)
class ScopedClassifier(ToyClassifier):
    """Registered only in the ``toyscope`` scope: found only when default_scope selects it."""
