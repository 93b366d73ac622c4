"""Network edges: TLS contexts, the ASGI TLS extension, peer revocation checks, egress policy."""
