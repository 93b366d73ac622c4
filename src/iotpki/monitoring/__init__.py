"""Watching the fleet: metrics now; expiry, anomaly checks and alerts build on the same events."""
