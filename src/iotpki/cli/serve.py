"""``iotpki serve``: run the HTTPS and HTTP listeners (initialising an empty home first)."""

from __future__ import annotations

import logging

import typer

from iotpki.cli.context import console, installation

__all__ = ["serve"]


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Address to listen on [default: 127.0.0.1]"),
    https_port: int | None = typer.Option(None, help="HTTPS port [default: 8443]"),
    http_port: int | None = typer.Option(None, help="HTTP port [default: 8080]"),
) -> None:
    """Serve EST, ACME, the API and dashboard (HTTPS) and OCSP, CRLs, SCEP (HTTP)."""
    from iotpki.server import serve as run_server

    logging.getLogger("iotpki").setLevel(logging.INFO)
    inst = installation(ctx, create=True)
    if not inst.is_initialised():
        console.print(f"initialising a new installation in {inst.home}")
        inst.initialise(actor="server")
    settings = inst.settings
    host = host or settings.host
    https_port = settings.https_port if https_port is None else https_port
    http_port = settings.http_port if http_port is None else http_port
    console.print(f"serving https://{host}:{https_port}/ and http://{host}:{http_port}/")
    run_server(inst, host=host, https_port=https_port, http_port=http_port)
