"""``iotpki serve``: run the HTTPS and HTTP listeners (initialising an empty home first)."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import typer

from iotpki.cli.context import installation
from iotpki.core.access import create_token
from iotpki.core.models import Role
from iotpki.errors import ConfigError
from iotpki.settings import CONFIG_FILE, default_home

__all__ = ["first_start_notice", "serve", "worker"]


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Address to listen on [default: 127.0.0.1]"),
    https_port: int | None = typer.Option(None, help="HTTPS port [default: 8443]"),
    http_port: int | None = typer.Option(None, help="HTTP port [default: 8080]"),
    access_log: bool = typer.Option(False, "--access-log", help="Log one line per request"),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Request processes [default: one per CPU]"
    ),
    jobs: bool = typer.Option(
        True, "--jobs/--no-jobs", help="Run the background jobs here too (or in `iotpki worker`)"
    ),
) -> None:
    """Serve EST, ACME, the API and dashboard (HTTPS) and OCSP, CRLs, SCEP (HTTP)."""
    from iotpki.server import bind, check_keys
    from iotpki.server import serve as run_server
    from iotpki.workers import default_workers, run_workers

    logging.getLogger("iotpki").setLevel(logging.INFO)
    inst = installation(ctx, create=True)
    settings = inst.settings
    host = host or settings.host
    https_port = settings.https_port if https_port is None else https_port
    http_port = settings.http_port if http_port is None else http_port
    first_start = not inst.is_initialised()
    if not first_start:
        check_keys(inst)  # a wrong passphrase stops here, before anything listens
    https_socket = bind(host, https_port)
    try:
        http_socket = bind(host, http_port)
    except BaseException:
        https_socket.close()
        raise
    if first_start:
        with inst.store.waiting_lock("initialise"):  # replicas started together: one initialises
            first_start = not inst.is_initialised()
            if first_start:
                _say(f"initialising a new installation in {inst.home}")
                inst.initialise(actor="server")
                token, _ = create_token(
                    inst.store,
                    inst.authority.clock,
                    role=Role.ADMIN,
                    description="created at first start",
                    actor="server",
                )
                _say(first_start_notice(inst.home, host, https_port, http_port, token))
        if not first_start:
            _say("joining the installation another replica has just initialised")
            check_keys(inst)
    urls = f"https://{_url_host(host)}:{https_port}/ and http://{_url_host(host)}:{http_port}/"
    count = workers or default_workers()
    ready = f"serving {urls}" + (f" with {count} workers" if count > 1 else "")
    if count == 1:
        run_server(
            inst,
            https_socket,
            http_socket,
            access_log=access_log,
            on_ready=lambda: _say(ready),
            jobs="all" if jobs else "process",
        )
    else:
        run_workers(
            inst,
            https_socket,
            http_socket,
            count,
            access_log=access_log,
            on_ready=lambda: _say(ready),
            jobs=jobs,
        )
    _say("stopped")


def worker(ctx: typer.Context) -> None:
    """Run the background jobs (lint, CRLs, scans, webhooks) without listeners."""
    from iotpki.server import check_keys, run_jobs

    logging.getLogger("iotpki").setLevel(logging.INFO)
    inst = installation(ctx)
    if not inst.is_initialised():
        raise ConfigError("the installation is not initialised: start `iotpki serve` first")
    check_keys(inst)
    _say("running the background jobs")
    run_jobs(inst)
    _say("stopped")


def _say(text: str) -> None:
    """A line for the operator, on stdout at once (a pipe or the journal must see it now)."""
    print(text, flush=True)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def first_start_notice(home: Path, host: str, https_port: int, http_port: int, token: str) -> str:
    """What a newcomer needs after the first start: the data, the trust anchor, a sign-in."""
    same_home = home.resolve() == default_home().expanduser().resolve()
    iotpki = "iotpki" if same_home else f"iotpki --home {shlex.quote(str(home))}"
    https = f"https://{_url_host(host)}:{https_port}"
    http = f"http://{_url_host(host)}:{http_port}"
    root_name = "root"  # the name `initialise` gives the root
    return "\n".join(
        [
            "",
            f"First start. Everything of this installation lives in {home}",
            f"(settings in {home / CONFIG_FILE}, the database, CA keys, CRLs).",
            "",
            "Trust anchor: the root CA certificate, in PEM for curl --cacert and TLS clients",
            f"  {iotpki} ca show {root_name} --pem > root.pem",
            f"  curl --cacert root.pem {https}/.well-known/est/cacerts -o cacerts.p7",
            f"(DER, for AIA: {http}/ca/{root_name}.crt)",
            "",
            f"Dashboard {https}/ and admin API: sign in with this admin token, shown only now:",
            f"  {token}",
            f"More tokens: {iotpki} token create --role admin",
            "",
        ]
    )
