"""The command lines and the tools behind them: train/test, convert, explain, compare, benchmark."""
