"""Pure metric kernels over arrays: no model, no CLI, no I/O.

Reading datasets and checkpoints, the feature cache and the features file are `ppvi_cli.evaluation`.
"""
