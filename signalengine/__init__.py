"""SignalEngine: crypto klines in, scored multi-timeframe signals out, outcomes learned.

This package is the composition root: the CLI (`cli`), `python -m signalengine`, the `up`
supervisor, Prefect automations and the served schedules. It is the only place allowed to
import every layer; below it the layers point one way (DESIGN §1):
root > flows > api > tasks > core (simulator beside core). `make lint` enforces it.
"""

__all__: list[str] = []
