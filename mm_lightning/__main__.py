"""``python -m mm_lightning`` and the ``mm-lightning`` console script."""
import contextlib
import sys


def run() -> int:
    # Some libraries print while they are imported (DeepSpeed reports its accelerator on stdout);
    # that must not mix into a command's output, such as `explain --json`.
    with contextlib.redirect_stdout(sys.stderr):
        from mm_lightning.tools.cli import main
    return main()


if __name__ == '__main__':
    raise SystemExit(run())
