"""What runs inside the Trainer: the LightningModule and DataModule, the hook bridge, mmengine's
loops, optimizer wrappers, schedulers and evaluators, and the Lightning behaviours neutralised; and what
builds it: the run's assembly and context, the runner view hooks receive, the Trainer's arguments."""
