"""Command-line entry points: `maf-pipe` (offline stages) and `maf` (training and use)."""
