"""Dataset tools that work on the canonical model: validation, statistics, splits, tiling, remapping and
the built-in synthetic sample generator (`edgevision.data.synth`)."""
