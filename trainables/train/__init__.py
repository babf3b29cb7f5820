"""Training: one network, packs of networks trained together, CUDA graphs, precision, devices,
and what a trial costs in memory and FLOPs."""
