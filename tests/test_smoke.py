"""The service starts on its own port and answers health without a key."""

from tests.conftest import make_config, running_app


async def test_health_is_public(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[{"name": "web", "type": "http", "url": target_server.url,
                                          "interval_seconds": 1}])
    async with running_app(cfg) as run:
        r = await run.client.get("/api/v1/health", headers={"x-api-key": ""})
        assert r.status_code == 200
        assert r.json()["enabled_targets"] == 1
        await run.wait_for(lambda: target_server.behaviour.hits)
