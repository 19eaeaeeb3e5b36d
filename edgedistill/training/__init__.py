"""Training: the one training loop, its config, the DataLoader, and the distillation losses."""
