"""``iotpki-agent`` (also ``iotpki agent``): enroll, renew, status, run.

Exit codes: 0 done, 1 configuration or local error, 3 not enrolled, 4 expired, 5 the server
refused, 6 waiting for approval, 7 server unreachable.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from iotpki.agent.agent import Agent, ExitCode
from iotpki.agent.client import EstPending, EstRefused, EstUnreachable
from iotpki.agent.config import load_config
from iotpki.errors import IotpkiError

__all__ = ["COMMANDS", "execute", "main"]

log = logging.getLogger("iotpki.agent")

COMMANDS = ("enroll", "renew", "status", "run")


def execute(command: str, agent: Agent, *, force: bool = False) -> ExitCode:
    """Run one agent command and map its outcome to an exit code."""
    try:
        if command == "status":
            status = agent.status()
            if status.enrolled:
                state = "expired" if status.expired else "valid"
                assert status.not_after is not None and status.renew_at is not None
                print(
                    f"enrolled: serial {status.serial}, {state}, "
                    f"not after {status.not_after.isoformat()}, "
                    f"renew at {status.renew_at.isoformat()}"
                )
            else:
                print("not enrolled")
            return status.exit_code
        if command == "enroll":
            if agent.status().enrolled and not force:
                print("already enrolled (use --force to enroll again)")
                return ExitCode.OK
            agent.enroll()
            return ExitCode.OK
        if command == "renew":
            if not agent.status().enrolled:
                return ExitCode.NOT_ENROLLED
            agent.renew()
            agent.refresh_trust()
            return ExitCode.OK
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        return agent.run(stop)
    except EstPending as exc:
        log.info("%s", exc.message)
        return ExitCode.PENDING
    except EstRefused as exc:
        log.error("%s", exc.message)
        return ExitCode.REFUSED
    except EstUnreachable as exc:
        log.error("server unreachable: %s", exc.message)
        return ExitCode.UNREACHABLE
    except IotpkiError as exc:
        log.error("%s", exc.message)
        status = agent.status()
        return status.exit_code if status.exit_code is not ExitCode.OK else ExitCode.ERROR


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``iotpki-agent``."""
    parser = argparse.ArgumentParser(prog="iotpki-agent", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--config", type=Path, help="agent.toml")
    parser.add_argument("--server", help="https://host:8443 (EST)")
    parser.add_argument("--via", help="mqtts://broker:8883: provision through an MQTT broker")
    parser.add_argument("--device-id")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--force", action="store_true", help="enroll even if enrolled")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(
            args.config,
            server=args.via or args.server,
            device_id=args.device_id,
            state_dir=args.state_dir,
        )
    except IotpkiError as exc:
        log.error("%s", exc.message)
        sys.exit(ExitCode.ERROR)
    sys.exit(execute(args.command, Agent(config), force=args.force))
