"""GET /webhooks/deliveries: what the durable webhook outbox delivered, retries, gave up on."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from signalengine.api.db.webhooks import deliveries, delivery_counts
from signalengine.api.deps import ConnDep

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

DeliveryStatus = Literal["pending", "delivered", "failed", "rejected"]


class DeliveryOut(BaseModel):
    """One signal to one URL; `signal_id` is the receiver's `Idempotency-Key`."""

    id: int
    signal_id: UUID
    url: str = Field(description="The receiver, without query string or credentials.")
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime = Field(description="When a pending delivery is tried next.")
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None = Field(description="HTTP status of the last attempt.")
    last_error: str | None


class DeliveriesOut(BaseModel):
    """Counts by status over the whole outbox, and the newest deliveries."""

    counts: dict[str, int]
    deliveries: list[DeliveryOut]


@router.get("/deliveries")
async def list_deliveries(
    conn: ConnDep,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveriesOut:
    """Webhook delivery state and attempts (newest first), and counts by status."""
    counts = await delivery_counts(conn=conn)
    rows = await deliveries(conn=conn, status=status, limit=limit)
    return DeliveriesOut(counts=counts, deliveries=[DeliveryOut(**row) for row in rows])
