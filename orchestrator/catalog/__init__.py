"""What a store holds: its complete trials and sweeps (`layerswap ls`), and checking every file
against the index (`layerswap verify`)."""
