"""Inference runs off the event loop: /health answers while the models are busy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx


def test_health_answers_while_inference_is_busy(server):
    long_texts = [("An honest, unhurried film about a family that does not talk to itself. " * 20).strip()] * 64
    finished: list[str] = []

    def heavy(_):
        with httpx.Client(base_url=server.url, timeout=300) as client:
            response = client.post("/sentiment", json={"texts": long_texts})
            finished.append("inference")
            return response.status_code

    with ThreadPoolExecutor(6) as pool:
        pending = [pool.submit(heavy, i) for i in range(6)]
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # Wait until the first request is being worked on, then ask for health.
            while not any(f.running() for f in pending):
                pass
            health = client.get("/health")
            finished.append("health")
        statuses = [f.result() for f in pending]
    assert health.status_code == 200
    assert statuses == [200] * 6
    assert finished.index("health") < len(finished) - 1, finished  # health did not wait for the work
