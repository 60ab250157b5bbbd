"""Distribution, applied from outside the model: the world (process group), the launcher, and the
strategies that wrap a single-device model (DDP, FSDP)."""
