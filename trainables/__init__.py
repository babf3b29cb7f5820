"""What runs on a worker: the training spec and measurement plan, model families, datasets,
training, measurement, the store reader/writer, and the Ray trial and task entry points.

Nothing here imports :mod:`orchestrator`: imports flow one way, orchestrator -> trainables.
"""
