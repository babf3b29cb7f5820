"""Running work on Ray: connecting, preflight, memory budgets and packing, the Tune sweep,
measurement jobs, progress lines, interrupts and log files."""
