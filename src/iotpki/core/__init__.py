"""The pure domain: authority, policy, revocation and audit; no web framework, no SQL."""
