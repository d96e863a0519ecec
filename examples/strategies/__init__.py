"""Example strategies: `examples.strategies.donchian:Donchian` and the deliberately biased
ones in `examples.strategies.biased` (see README.md here)."""
