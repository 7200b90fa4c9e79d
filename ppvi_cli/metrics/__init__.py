"""Pure metric kernels over arrays: no model, no CLI, no I/O."""
