"""``python -m iotpki.cli``."""

from iotpki.cli.main import run

run()
