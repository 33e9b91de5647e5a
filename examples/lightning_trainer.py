"""Bring your own Lightning Trainer: a config-built module and datamodule, your callbacks and logger.

    python examples/lightning_trainer.py [--max-epochs N]

The ConfigModule carries the config's mmengine hooks (scheduling, checkpoints, logs) as
a callback; ``trainer_kwargs`` gives the Trainer settings that match the config, and
anything you pass next to them is yours: here a CSV logger that receives mmengine's
training scalars (loss, lr, time... every log_every_n_steps iterations) and the validation
metrics, and Lightning's LearningRateMonitor and ModelCheckpoint.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from mm_lightning import ConfigDataModule, ConfigModule, load_config, trainer_kwargs  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'spiral', 'mlp_spiral.py')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--max-epochs', type=int, default=6)
    parser.add_argument('--work-dir', default='work_dirs/lightning_trainer')
    args = parser.parse_args()

    cfg = load_config(CONFIG, [f'train_cfg.max_epochs={args.max_epochs}', f'work_dir={args.work_dir}'])
    module = ConfigModule.from_config(cfg)
    datamodule = ConfigDataModule.from_config(cfg)

    kwargs = trainer_kwargs(cfg)
    kwargs['logger'] = CSVLogger(args.work_dir, name='csv')
    kwargs['callbacks'] += [LearningRateMonitor(logging_interval='step'),
                            ModelCheckpoint(dirpath=os.path.join(args.work_dir, 'lightning_ckpt'),
                                            monitor='spiral/accuracy', mode='max')]
    kwargs.update(enable_checkpointing=True, log_every_n_steps=5)
    trainer = L.Trainer(**kwargs)
    trainer.fit(module, datamodule=datamodule)
    print('validation metrics (mmengine names):', module.metrics['val'])
    print('Lightning callback_metrics:', {k: float(v) for k, v in trainer.callback_metrics.items()})


if __name__ == '__main__':
    main()
