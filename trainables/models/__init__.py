"""Model families: the networks layerswap trains, and their layers in forward order."""
