"""Pictures of flows: image grids, 2-D densities, layer-wise traces."""
