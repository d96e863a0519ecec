-- Runs once, when the TimescaleDB volume is first initialised (after the image's own
-- 000_/001_ scripts). Prefect and MLflow keep their metadata in databases of their own
-- beside the SignalEngine database, owned by the same role (POSTGRES_USER).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
