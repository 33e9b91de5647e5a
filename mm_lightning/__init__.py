"""mm_lightning: run OpenMMLab (mmengine) configs on PyTorch Lightning.

mmengine builds the parts (registries, dataloaders, optimizer wrappers, schedulers,
metrics, hooks); Lightning runs them (loops, devices, distribution, precision).
"""
from .config import ConfigError, load_config
from .data import ConfigDataModule
from .module import ConfigModule
from .runner import FlexibleRunner
from .trainer import trainer_kwargs

__all__ = ['FlexibleRunner', 'ConfigModule', 'ConfigDataModule', 'trainer_kwargs', 'load_config',
           'ConfigError']
__version__ = '0.1.0'
