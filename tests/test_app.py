"""The app factory's process-wide choices."""

from __future__ import annotations

import gc
from pathlib import Path

from quart_api.app import create_app
from quart_api.settings import Settings
from tests.api.conftest import service_settings


async def test_start_up_objects_are_frozen_when_serving_starts(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    app = create_app(service_settings(tmp_path, gc_freeze=True))
    try:
        assert gc.get_freeze_count() == 0  # building the app is not serving it
        async with app.test_app():
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_gc_freeze_false_leaves_the_collector_alone(tmp_path: Path) -> None:
    app = create_app(service_settings(tmp_path, gc_freeze=False))
    async with app.test_app():
        assert gc.get_freeze_count() == 0


def test_gc_freeze_is_on_unless_turned_off() -> None:
    assert Settings.from_env({}).gc_freeze is True
    assert Settings.from_env({"GC_FREEZE": "false"}).gc_freeze is False
