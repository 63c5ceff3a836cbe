"""What train.py and evaluate.py share: config schema, env/model factories, checkpoints, W&B."""
