"""Entry points that run on Ray workers: the Tune trial (a queue of packs), the measurement
task of `layerswap analyze`, what one pack does end to end, and W&B logging of a network."""
