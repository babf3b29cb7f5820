"""The report: statistics over seeds, per-layer statistics of movement and criticality (with which
scores are censored), verdicts, the data of each figure and its drawing, document rendering
(Markdown and HTML), assembling them from the index tables, and publishing STORE/report whenever
the index it was built from changes."""
