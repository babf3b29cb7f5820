"""Datasets without a network: sources, file formats, safe unpickling, synthetic data, and the
tensors a trial trains on."""
