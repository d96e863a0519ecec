"""The `model_decisions` table: what each retrain decided, for the API to tell users.

MLflow holds the full run; this row is what `/performance/model`, `/health` and the
dashboard need without talking to MLflow: whether a version was promoted, why not, and
whether it has any feature importance at all.
"""

from __future__ import annotations

from signalengine.core.db import DbConn

__all__ = ["store_decision"]


def store_decision(
    conn: DbConn,
    *,
    model_type: str,
    model_version: str,
    run_id: str,
    promoted: bool,
    reason: str | None,
    has_importance: bool,
) -> None:
    """Upsert one version's decision (a re-published version replaces its row)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO model_decisions"
            " (model_type, model_version, run_id, promoted, reason, has_importance)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (model_type, model_version)"
            " DO UPDATE SET run_id = EXCLUDED.run_id, promoted = EXCLUDED.promoted,"
            " reason = EXCLUDED.reason, has_importance = EXCLUDED.has_importance,"
            " decided_at = now()",
            (model_type, model_version, run_id, promoted, reason, has_importance),
        )
