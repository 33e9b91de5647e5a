"""Config to Lightning objects: strategies, launchers, precision, loggers, bars, profilers (``trainer_kwargs``,
which puts them together with the runtime's callbacks, is :mod:`mm_lightning.runtime.trainer`).

Nothing here runs anything: each module turns config keys into what Lightning takes."""
