"""Measurements on trained weights: layer swaps, weight movement, module criticality, and
measuring networks read back from the store."""
