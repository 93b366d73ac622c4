"""Provisioning over MQTT: devices whose only link is the broker enroll and renew through it."""
