"""Prefect automations of SignalEngine: create or update them from `automations.yaml`.

The file holds the automations in the format of `prefect automation create --from-file`
(zombie flow runs marked Crashed; a crashed `stream` run started again). Automations are
matched by name: a missing one is created, a changed one is updated, an unchanged one is
left alone (so its trigger state survives), and extra copies of the same name (say from
`prefect automation create`) are deleted, keeping one that matches the file if any.
Running `apply_automations` twice therefore changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.settings import PREFECT_API_URL, temporary_settings

from signalengine.core.errors import ConfigurationError

# Package data beside this module, so the wheel, the image and a checkout all carry it.
AUTOMATIONS_FILE = Path(__file__).resolve().parent / "automations.yaml"

logger = logging.getLogger(__name__)

__all__ = ["AUTOMATIONS_FILE", "AppliedAutomation", "apply_automations", "load_automations"]


@dataclass(frozen=True)
class AppliedAutomation:
    """What `apply_automations` did to one automation: created, updated or unchanged."""

    name: str
    id: UUID
    action: str


def load_automations(path: Path = AUTOMATIONS_FILE) -> list[AutomationCore]:
    """The automations of a YAML/JSON file: a list, ``{automations: [...]}`` or one object."""
    data = yaml.safe_load(path.read_text())
    items = data["automations"] if isinstance(data, dict) and "automations" in data else data
    items = items if isinstance(items, list) else [items]
    automations = [AutomationCore.model_validate(item) for item in items]
    names = [a.name for a in automations]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{path}: automation names must be unique, got {names}")
    return automations


def _sorted_sets(value: Any) -> Any:
    """JSON with every list of strings sorted: `after`, `expect`, `for_each` are sets."""
    if isinstance(value, dict):
        return {k: _sorted_sets(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sorted_sets(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def _comparable(automation: AutomationCore) -> Any:
    """The user-set part of an automation as JSON, for an equality check."""
    fields = set(AutomationCore.model_fields)
    core = AutomationCore.model_validate(automation.model_dump(include=fields))
    return _sorted_sets(json.loads(core.model_dump_json()))


async def apply_automations_async(
    api_url: str | None = None, *, path: Path = AUTOMATIONS_FILE
) -> list[AppliedAutomation]:
    """Create or update every automation of `path` on the Prefect API at `api_url`.

    `api_url` is the API root (``http://host:4200/api``); None means PREFECT_API_URL.
    """
    wanted = load_automations(path)
    if api_url is None:
        return await _apply(wanted)
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return await _apply(wanted)


async def _apply(wanted: list[AutomationCore]) -> list[AppliedAutomation]:
    applied: list[AppliedAutomation] = []
    async with get_client() as client:
        for automation in wanted:
            # newest first; keep a copy that already matches (its trigger state survives)
            existing = await client.read_automations_by_name(automation.name)
            if not existing:
                new_id = await client.create_automation(automation)
                applied.append(AppliedAutomation(automation.name, new_id, "created"))
                continue
            wanted_json = _comparable(automation)
            keep = next((a for a in existing if _comparable(a) == wanted_json), existing[0])
            for duplicate in existing:
                if duplicate.id != keep.id:
                    await client.delete_automation(duplicate.id)
                    logger.info(
                        "deleted duplicate automation %s (%s)", duplicate.name, duplicate.id
                    )
            if _comparable(keep) == wanted_json:
                applied.append(AppliedAutomation(automation.name, keep.id, "unchanged"))
            else:
                await client.update_automation(keep.id, automation)
                applied.append(AppliedAutomation(automation.name, keep.id, "updated"))
    for item in applied:
        logger.info("automation %s: %s (%s)", item.name, item.action, item.id)
    return applied


def apply_automations(
    api_url: str | None = None, *, path: Path = AUTOMATIONS_FILE
) -> list[AppliedAutomation]:
    """Synchronous `apply_automations_async` (not from inside a running event loop)."""
    return asyncio.run(apply_automations_async(api_url, path=path))


if __name__ == "__main__":  # python -m signalengine.automations [API_URL]: one JSON line out
    result = apply_automations(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.stdout.write(
        json.dumps({a.name: {"id": str(a.id), "action": a.action} for a in result}) + "\n"
    )
