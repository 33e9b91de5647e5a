"""What runs inside the Trainer: the LightningModule and DataModule, the hook bridge, mmengine's
loops, optimizer wrappers, schedulers and evaluators, and the Lightning behaviours neutralised."""
