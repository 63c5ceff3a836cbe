"""Evaluation: episodes on held-out goals, their tables, plots and videos, sweeps and learning curves."""
