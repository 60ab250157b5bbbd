"""Horizontal scaling, measured and predicted: sweeps over worker counts (`sweep`), a calibrated
step-time model (`calibrate`, `costmodel`), devices and prices (`catalog`), and the planner."""
