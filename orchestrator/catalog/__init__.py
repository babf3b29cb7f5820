"""What a store holds: its complete trials and sweeps (`layerswap ls`), the names of its
configurations (one naming for ls, the report and the sweep's plan lines), and checking every
file against the index (`layerswap verify`)."""
