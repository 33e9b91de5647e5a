"""Configs in: loading every form mmengine takes, checks before anything is built, registry builds.

The loading names are re-exported here, the package's own import path for them.
"""
from mm_lightning.config.loading import (
                                         CfgOptions,
                                         ConfigAssertionError,
                                         ConfigError,
                                         ConfigFileNotFoundError,
                                         ConfigImportError,
                                         ConfigKeyError,
                                         ConfigLike,
                                         ConfigRuntimeError,
                                         ConfigTypeError,
                                         config_error,
                                         load_config,
                                         parse_cfg_options,
)

__all__ = ['CfgOptions', 'ConfigAssertionError', 'ConfigError', 'ConfigFileNotFoundError', 'ConfigImportError',
           'ConfigKeyError', 'ConfigLike', 'ConfigRuntimeError', 'ConfigTypeError', 'config_error', 'load_config',
           'parse_cfg_options']
