"""The driver side: sweep configs and their grid, launching on Ray (local or a cluster),
measurement jobs, statistics and the report, listing and verifying stores, W&B settings, the
``layerswap`` CLI.

Importing this package is light (no torch, Ray or pyarrow): the CLI validates a config at once.
"""
