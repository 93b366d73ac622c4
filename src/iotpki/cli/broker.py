"""``iotpki broker config|refresh``: keep a mosquitto broker's TLS files in step with iotpki."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from iotpki.cli.context import console, installation
from iotpki.services.broker import BrokerSettings, refresh, write_config

__all__ = ["app"]

app = typer.Typer(help="Configure a TLS-terminating MQTT broker (mosquitto).", no_args_is_help=True)


@app.command("config")
def config(
    ctx: typer.Context,
    directory: Path = typer.Option(..., "--dir", help="Directory for the broker's files"),
    name: list[str] = typer.Option(["127.0.0.1"], "--name", help="DNS name or IP (repeatable)"),
    host: str = typer.Option("127.0.0.1", help="Address mosquitto listens on"),
    port: int = typer.Option(8883, help="Port mosquitto listens on"),
    reader: list[str] = typer.Option([], "--reader", help="Identity that reads devices/#"),
    pid_file: Path | None = typer.Option(None, help="Send SIGHUP to this pid to reload"),
    reload_command: str | None = typer.Option(None, help="Or run this command to reload"),
    user: str | None = typer.Option(None, help="User mosquitto drops to when started as root"),
) -> None:
    """Write mosquitto.conf, the CA file, the broker's certificate and key, and the CRL file."""
    inst = installation(ctx)
    settings = write_config(
        inst,
        BrokerSettings(
            directory=directory.resolve(),
            names=tuple(name),
            host=host,
            port=port,
            readers=tuple(reader),
            pid_file=pid_file,
            reload_command=reload_command,
            user=user,
        ),
    )
    console.print(f"wrote the broker configuration in {settings.directory}", soft_wrap=True)
    console.print(f"run: mosquitto -c {settings.path('mosquitto.conf')}", soft_wrap=True)
    command = f"iotpki --home {shlex.quote(str(inst.home))} broker refresh --dir {directory}"
    console.print(
        "so that each CRL publication reloads the broker, set in the server's settings:\n"
        f"  [revocation]\n  publish_command = {command!r}",
        markup=False,
        soft_wrap=True,
    )


@app.command("refresh")
def refresh_command(
    ctx: typer.Context,
    directory: Path = typer.Option(..., "--dir", help="The broker directory of `config`"),
) -> None:
    """Rewrite the CA and CRL files, renew the certificate when due, and reload the broker."""
    changed = refresh(installation(ctx), directory.resolve())
    console.print("broker reloaded" if changed else "broker files already current")
