"""Prefect flows: orchestration only; each module holds one deployable flow (prefect.yaml)."""
