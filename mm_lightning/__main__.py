"""``python -m mm_lightning`` and the ``mm-lightning`` console script."""
import contextlib
import gc
import sys


def run() -> int:
    # Some libraries print while they are imported (DeepSpeed reports its accelerator on stdout);
    # that must not mix into a command's output, such as `explain --json`.
    with contextlib.redirect_stdout(sys.stderr):
        from mm_lightning.tools.cli import main
    status = main()
    # The process ends here. The interpreter's teardown would walk every object torch, Lightning and mmengine
    # made at import with the cyclic GC, about a second of CPU: a fifth of `explain` or a config error. The
    # command's own garbage is collected now (its finalizers run); what is left, mostly module state, is frozen
    # out of that walk. atexit handlers and reference-count finalizers still run.
    gc.collect()
    gc.freeze()
    return status


if __name__ == '__main__':
    raise SystemExit(run())
