"""The training core every task plugs into: devices, the train state and loop, checkpoints,
run files, metrics and figures."""
