"""What survives a restart: checkpoints in both formats, conversion, safe files, random state."""
