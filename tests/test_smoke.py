"""The service starts on its own port and answers health without a key."""

import gc

from tests.conftest import make_config, running_app


async def test_health_is_public(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[{"name": "web", "type": "http", "url": target_server.url,
                                          "interval_seconds": 1}])
    async with running_app(cfg) as run:
        r = await run.client.get("/api/v1/health", headers={"x-api-key": ""})
        assert r.status_code == 200
        assert r.json()["enabled_targets"] == 1
        await run.wait_for(lambda: target_server.behaviour.hits)


async def test_start_up_objects_are_out_of_the_collectors_sight_while_serving(tmp_path):
    """A full collection visited every object made at start-up: a pause of the whole event loop
    (every probe due waited) of ~200 ms with 1,000 targets."""
    cfg = make_config(tmp_path, targets=[{"name": "lo", "type": "icmp", "host": "127.0.0.1"}])
    assert gc.get_freeze_count() == 0
    async with running_app(cfg) as run:
        assert gc.get_freeze_count() > len(gc.get_objects())  # most are frozen
        assert run.app.scheduler.targets
        r = await run.client.get("/api/v1/health", headers={"x-api-key": ""})
        assert r.status_code == 200
    assert gc.get_freeze_count() == 0  # collectable again after the stop
