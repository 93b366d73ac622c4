"""iotpki: a public-key infrastructure for fleets of IoT devices."""

__version__ = "0.1.0"
