"""The report: statistics over seeds, per-layer statistics of movement and criticality, verdicts,
figures, document rendering (Markdown and HTML), and assembling them from the index tables."""
