"""Units of work and the domain logic they run, grouped by concern (pure, testable without Prefect).

- `marketdata`: exchange access, live collection, backfill, validation, kline storage, timeframes
- `engine`: the pure signal engine (features, events, scoring, MTF, records)
- `outcomes`: settlement, signal and performance stores, trade statistics, rollups, controls
- `runs`: the engine's drivers (live, backtest/replay) and the backtest report
- `learning`: labels, training, importance, the MLflow registry and the live AI filter
- `alerts`: signed webhooks
- `metrics`: the stream process's Prometheus families
"""
