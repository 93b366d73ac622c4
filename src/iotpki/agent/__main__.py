"""``python -m iotpki.agent``."""

from iotpki.agent.cli import main

main()
