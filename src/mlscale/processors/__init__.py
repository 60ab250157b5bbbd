"""Processors: what a machine has, what it delivers, and a simulated systolic array."""
