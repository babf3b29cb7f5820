"""Weights & Biases on the driver: settings resolved once for every worker, and the report as an
artifact."""
