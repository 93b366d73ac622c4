"""One installation's services: home and settings file, jobs, revocation, attestation, broker."""
