"""The device agent: EST enrollment, renewal and trust-anchor refresh on a device."""

from iotpki.agent.agent import Agent, ExitCode, Status
from iotpki.agent.config import AgentConfig, load_config

__all__ = ["Agent", "AgentConfig", "ExitCode", "Status", "load_config"]
