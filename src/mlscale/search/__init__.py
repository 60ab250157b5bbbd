"""Hyperparameter and architecture search on Optuna: a space file (space.py), one trial = one
training run (objective.py), parallel workers sharing one study (runner.py), and what a finished
study reports (report.py)."""
