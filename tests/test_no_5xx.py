"""Every 5xx is a bug: heartbeat periods, check-in saves from worker threads, webhook tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from tests.conftest import make_config, running_app


async def test_heartbeat_period_below_a_second_is_a_400(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        r = await run.client.post("/api/v1/targets", json={
            "name": "job", "type": "heartbeat", "period": 0.0001})
        assert r.status_code == 400, r.text
        assert "period" in r.json()["detail"]
        r = await run.client.post("/api/v1/targets", json={
            "name": "job", "type": "heartbeat", "period": "1h"})
        assert r.status_code == 201, r.text
        r = await run.client.get("/api/v1/heartbeats")
        assert r.status_code == 200 and r.json()[0]["name"] == "job"
        assert (await run.client.get("/api/v1/targets")).status_code == 200


async def test_checkin_state_is_saved_from_a_worker_thread(tmp_path):
    """A route run on the threadpool reading a new heartbeat target saves its row (it raised
    'no running event loop', a 500)."""
    async with running_app(make_config(tmp_path)) as run:
        r = await run.client.post("/api/v1/targets", json={
            "name": "job", "type": "heartbeat", "period": "1h"})
        target = run.app.targets[r.json()["id"]]
        run.app.heartbeats.rows.pop(target.id, None)  # as if never seen: the row is created
        status = await asyncio.to_thread(run.app.heartbeats.status, target)
        assert status["token"]

        def saved() -> bool:
            from sqlmodel import select

            from pingr.storage.tables import HeartbeatRow
            with run.app.store.session() as s:
                return s.exec(select(HeartbeatRow).where(
                    HeartbeatRow.target_id == target.id)).first() is not None

        await run.wait_for(saved)


async def test_webhook_test_is_one_attempt_with_a_short_timeout(tmp_path):
    """A receiver that never answers: the test call reports it within seconds after one
    attempt (it retried for 90 s inside the request)."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sink.accept()
            except OSError:
                return
            accepted.append(conn)  # never answered

    threading.Thread(target=accept, daemon=True).start()
    try:
        async with running_app(make_config(tmp_path)) as run:
            r = await run.client.post("/api/v1/webhooks", json={
                "name": "slow", "url": f"http://127.0.0.1:{sink.getsockname()[1]}/hook"})
            hook = r.json()
            start = time.monotonic()
            r = await run.client.post(f"/api/v1/webhooks/{hook['id']}/test", timeout=60)
            took = time.monotonic() - start
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ok"] is False and body["status"] is None
            assert "Timeout" in body["error"]
            assert took < 8, took
            assert len(accepted) == 1
    finally:
        sink.close()
        for conn in accepted:
            conn.close()
