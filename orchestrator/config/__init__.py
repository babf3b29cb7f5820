"""Sweep configs: the guarded YAML loader, validation of every value, and the grid of networks a
config expands to. Imports nothing heavy."""
