"""Store work and signing run off the event loop: a write waiting on the database lock does
not freeze the HTTPS listener."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from acmekit import Client
from iotpki.server import Service, build_https_app
from iotpki.services.installation import Installation

_BOUND = 20.0  # generous, and below SQLite's 30 s busy timeout


def test_healthz_answers_while_an_acme_write_waits_on_the_lock(
    inst: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = inst.store.engine.url.database
    assert database
    writing = threading.Event()
    transaction = inst.store.transaction

    def announced(*, readonly: bool = False) -> AbstractContextManager[Any]:
        if not readonly:
            writing.set()  # this write is about to wait on the lock held below
        return transaction(readonly=readonly)

    monkeypatch.setattr(inst.store, "transaction", announced)
    spend = inst.store.spend

    def announced_spend(*args: Any) -> str | None:
        writing.set()  # spending the nonce is the request's first write
        return spend(*args)

    monkeypatch.setattr(inst.store, "spend", announced_spend)

    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    with TestClient(build_https_app(Service(inst)), base_url="https://acme.test") as http:
        client = Client(http)
        client.nonce = client.fresh_nonce()  # issuing a nonce writes nothing
        holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        registered: list[httpx.Response] = []
        acme = threading.Thread(target=lambda: registered.append(client.register()), daemon=True)
        health: list[httpx.Response] = []
        probe = threading.Thread(target=lambda: health.append(http.get("/healthz")), daemon=True)
        try:
            acme.start()
            assert writing.wait(_BOUND), "the ACME request never began its write"
            probe.start()
            probe.join(_BOUND)
            assert health and health[0].status_code == 200, "the listener froze"
            assert acme.is_alive() and not registered, "the ACME write did not wait"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            acme.join(_BOUND * 2)
    assert registered and registered[0].status_code == 201, registered[0].text
