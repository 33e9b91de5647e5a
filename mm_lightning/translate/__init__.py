"""Config to Lightning objects: Trainer arguments, strategies, launchers, precision, loggers, bars.

Nothing here runs anything: each module turns config keys into what Lightning takes."""
