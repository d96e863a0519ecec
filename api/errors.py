"""Exception handlers: client faults become 4xx JSON, outages 503, the rest a logged 500.

Parameters are validated before they reach SQL, so a psycopg DataError here means a
value that passed validation but PostgreSQL still refused (an out-of-range timestamp,
say): the client's fault, answered with 400. An unreachable database is an outage (503).
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

logger = logging.getLogger(__name__)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    logger.info("rejected parameters of %s: %s", request.url.path, exc)
    return JSONResponse(
        {"detail": "a parameter value is out of range or malformed"},
        status_code=status.HTTP_400_BAD_REQUEST,
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable for %s: %s", request.url.path, exc)
    return JSONResponse(
        {"detail": "database unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
    )


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(psycopg.DataError, _data_error)
    app.add_exception_handler(psycopg.OperationalError, _unavailable)
    app.add_exception_handler(PoolTimeout, _unavailable)
    app.add_exception_handler(Exception, _internal)
