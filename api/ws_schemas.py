"""WebSocket message schemas of `/ws/feed`, keyed by `type`.

Server → client: connected, signal, status, keepalive.
Client → server: subscribe (filters what the client gets), ping (answered by keepalive).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from signalengine.api.schemas import Direction, Signal
from signalengine.core.symbols import normalize_symbol
from signalengine.core.vocabulary import STRATEGY_NAME_PATTERN


class ConnectedData(BaseModel):
    message: str
    version: str


class ConnectedMessage(BaseModel):
    type: Literal["connected"] = "connected"
    data: ConnectedData


class SignalMessage(BaseModel):
    type: Literal["signal"] = "signal"
    data: Signal


class StatusData(BaseModel):
    metrics: dict[str, float | int | None]
    connected_clients: int


class StatusMessage(BaseModel):
    type: Literal["status"] = "status"
    data: StatusData


class KeepaliveMessage(BaseModel):
    type: Literal["keepalive"] = "keepalive"


ServerMessage = Annotated[
    ConnectedMessage | SignalMessage | StatusMessage | KeepaliveMessage,
    Field(discriminator="type"),
]


class SubscribeMessage(BaseModel):
    """Replace the client's filters; an empty or missing list means "all"."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["subscribe"]
    symbols: list[str] | None = Field(default=None, max_length=500)
    directions: list[Direction] | None = None
    timeframes: list[str] | None = Field(default=None, max_length=50)
    strategies: list[Annotated[str, Field(pattern=STRATEGY_NAME_PATTERN)]] | None = Field(
        default=None, max_length=50
    )
    exchanges: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{1,49}$")]] | None = Field(
        default=None, max_length=50
    )

    @field_validator("symbols")
    @classmethod
    def _normalize(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [normalize_symbol(s) for s in value]


class PingMessage(BaseModel):
    type: Literal["ping"]


ClientMessage = Annotated[SubscribeMessage | PingMessage, Field(discriminator="type")]
CLIENT_MESSAGE: TypeAdapter[SubscribeMessage | PingMessage] = TypeAdapter(ClientMessage)
KEEPALIVE_TEXT = KeepaliveMessage().model_dump_json()
