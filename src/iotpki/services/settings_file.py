"""The ``iotpki.toml`` a new home starts with: every setting, commented out, at its default.

A line ``# key = value`` shows a default: uncommenting it changes nothing. A line ending in
``# example`` shows a setting that is unset by default, with a value of the right form.
"""

from __future__ import annotations

import os
from pathlib import Path

from iotpki.settings import CONFIG_FILE

__all__ = ["settings_template", "write_settings_file"]

_TEMPLATE = """\
# iotpki settings of the installation in this directory.
#
# Every setting is shown commented out at its default; uncomment a line to change it.
# Lines ending in "# example" are unset by default and show a value of the right form.
# Top-level settings can also be given in the environment as IOTPKI_<NAME> (for example
# IOTPKI_HTTPS_PORT=9443), which wins over this file.

# -- storage and keys ------------------------------------------------------------------------

# The database: SQLite in this directory by default; postgresql+psycopg://user@host/db for
# production (several `serve` processes can share one PostgreSQL).
# database_url = "sqlite:///@HOME@/iotpki.db"

# Backend for new CA keys: "file" (PKCS#8 files under keys/, encrypted with the passphrase)
# or "pkcs11" (an HSM token, see the pkcs11_* settings).
# key_backend = "file"

# Passphrase of the file backend: given here, in IOTPKI_PASSPHRASE, or in a file. Without
# any, one is generated in secrets/passphrase (protected only by file permissions).
# passphrase = "correct horse battery staple"  # example
# passphrase_file = "/etc/iotpki/passphrase"  # example

# The PKCS#11 token for CA keys: module, token label and user PIN (or a file holding it).
# pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"  # example
# pkcs11_token = "iotpki"  # example
# pkcs11_pin = "1234"  # example
# pkcs11_pin_file = "/etc/iotpki/pin"  # example

# -- listeners and names ---------------------------------------------------------------------

# Address and ports of the HTTPS listener (EST, ACME, API, dashboard) and the HTTP listener
# (CA certificates, CRLs, OCSP, SCEP).
# host = "127.0.0.1"
# https_port = 8443
# http_port = 8080

# Base of the OCSP, CRL and caIssuers URLs put in certificates; by default
# http://<host>:<http_port>.
# public_base_url = "http://127.0.0.1:8080"

# Names (DNS names or IP addresses) in the HTTPS listener's own certificate.
# server_names = ["localhost", "127.0.0.1"]

# TLS-terminating reverse proxies (addresses or networks) whose client-certificate header is
# believed, and that header's name (nginx: $ssl_client_escaped_cert).
# trusted_proxies = []
# client_cert_header = "x-ssl-client-cert"

# Internal networks (loopback, private, link-local...) that ACME validation and webhook
# deliveries may still reach; every other internal address is refused.
# egress_allow = ["10.20.0.0/16"]  # example

# -- issuance ----------------------------------------------------------------------------------

# O= of the CA names created here, and the CA used when a request names none.
# organization = "Example Devices Ltd"  # example
# default_ca = "issuing"  # example

# Lint every issued certificate in the background, keeping the findings for the report.
# lint_background = true

# Seconds an EST client is told to wait (Retry-After) while a request awaits approval.
# est_retry_after = 60

# openssl-blacklist files of weak RSA moduli (e.g. Debian CVE-2008-0166), refused at issuance.
# key_blocklists = []

# Profiles: override a built-in one (device, gateway, server, ocsp-signer, sub-ca) or add one.
# [profiles.camera]  # example
# identity = "device"  # example
# key_types = ["p256"]  # example
# default_lifetime = "30d"  # example
# max_lifetime = "90d"  # example
# key_usage = ["digital_signature"]  # example
# extended_key_usage = ["clientAuth"]  # example
# san_types = ["uri"]  # example

# -- revocation: CRLs and OCSP ---------------------------------------------------------------

# [revocation]
# How long CRLs and OCSP responses are valid, how often CRLs are remade, and the HTTP
# max-age of CRL and OCSP answers (per CA in [revocation.cas.<name>]).
# crl_validity = "24h"
# crl_interval = "6h"
# delta_crl_validity = "2h"
# delta_crl_interval = "30m"
# crl_max_age = "5m"
# ocsp_validity = "4h"
# ocsp_max_age = "15m"
# After a revocation: delay before the delta CRL, and before the full CRL, is remade.
# revocation_delay = "5s"
# full_crl_delay = "60s"
# A command run after each CRL publication (e.g. to make a broker reload its CRL file); it
# gets the CRL files in IOTPKI_CRL_FILES.
# publish_command = "iotpki broker refresh --dir /etc/mosquitto/iotpki"  # example
# How many OCSP responses are kept signed ahead of need, the most certificates one OCSP
# request may ask about, and the longest nonce (bytes) it may carry.
# ocsp_presign_limit = 100000
# ocsp_max_certs = 16
# ocsp_max_nonce = 32
# CRL partitions: a new certificate names the partition of its expiry window (days; 0 names the
# CA-wide CRL instead) and serial bucket; a revocation reaches its partition after the delay; a
# partition CRL larger than partition_max_bytes is logged (raise the buckets for new windows).
# partition_window_days = 7
# partition_buckets = 4
# partition_delay = "1s"
# partition_max_bytes = 5000000

# Periods of one CA, overriding those above.
# [revocation.cas.issuing]  # example
# crl_validity = "7d"  # example
# crl_interval = "1d"  # example
# delta_crl_validity = "12h"  # example
# delta_crl_interval = "1h"  # example
# crl_max_age = "10m"  # example
# ocsp_validity = "1d"  # example
# ocsp_max_age = "1h"  # example

# -- ACME (RFC 8555) ---------------------------------------------------------------------------

# [acme]
# Accounts need external account binding (`iotpki acme eab-create`).
# eab_required = false
# Terms of service and website linked from the directory.
# terms_of_service = "https://pki.example.com/terms"  # example
# website = "https://pki.example.com"  # example
# Profile of certificates ordered without one, and the public base of ACME URLs (by default
# the address the request came to).
# default_profile = "server"
# base_url = "https://pki.example.com:8443"  # example
# How long an order and an authorization stay usable.
# order_lifetime = "1d"
# authorization_lifetime = "1d"
# Rate limits: new orders per account and per identifier per hour (0: unlimited).
# orders_per_account_per_hour = 300
# orders_per_identifier_per_hour = 100
# Ports and resolvers used to validate challenges (change them only for test setups).
# http01_port = 80
# tlsalpn01_port = 443
# dns_resolvers = []
# resolve_override = []
# Seconds per validation attempt, the pauses between attempts, the overall deadline, and how
# long a challenge response waits for its validation before answering "processing".
# validation_timeout = 10.0
# validation_retry_delays = [1.0, 2.0, 4.0, 8.0]
# validation_deadline = 60.0
# validation_wait = 1.0
# Retry-After (seconds) of renewal information (RFC 9773).
# ari_retry_after = 21600

# -- TPM attestation and the AK CA -----------------------------------------------------------

# [attestation]
# PEM bundles of TPM-manufacturer / attestation-key CA roots (device-attest-01 is offered
# when any root is trusted).
# roots = []
# The CA that certifies attestation keys (by default the default CA), their lifetime, how
# long a credential activation stays open, and AK CA requests per minute per client address.
# akca_ca = "issuing"  # example
# ak_lifetime = "365d"
# activation_validity = "10m"
# akca_requests_per_minute = 60

# -- provisioning over MQTT (docs/mqtt.md) -------------------------------------------------------

# [mqtt]
# The broker the provisioning service connects to (unset: no provisioning over MQTT), the
# directory `iotpki broker config` wrote (provisioner.pem, provisioner.key, ca.pem; by default
# <home>/broker), the service's client ID and the topics' prefix.
# broker_url = "mqtts://127.0.0.1:8883"  # example
# client_dir = "@HOME@/broker"  # example
# client_id = "iotpki-provisioner"
# prefix = "iotpki/"
# Requests per minute one device identity and client ID may send, the threads answering
# requests, and seconds between two looks at the retained trust bundle and CRL announcements.
# requests_per_minute = 30
# threads = 4
# announce_interval = 30.0

# -- monitoring, alerts and the dashboard ------------------------------------------------------

# [monitoring]
# Seconds between two scans of the inventory for findings.
# scan_interval = 300.0
# How far back expired certificates are reported, in days.
# expired_lookback_days = 30
# Maximum certificate age in days, per profile and for CAs (unset: no check).
# max_age_days = { device = 90 }  # example
# ca_max_age_days = 3650  # example
# Windows (minutes) and retention (days) of certificate usage evidence, and the window and
# thresholds of renewal storms and enrollment failure spikes.
# usage_window_minutes = 60
# usage_retention_days = 30
# rate_window_minutes = 10
# renewal_storm_threshold = 500
# enrollment_failure_threshold = 50
# Usage reports from brokers: the largest clock skew accepted, in seconds, and the most
# events in one report.
# ingest_max_skew_seconds = 300
# ingest_max_events = 1000
# Webhooks that receive findings (HMAC-signed with the secret in this file; by default one
# generated in secrets/webhook) and how often a delivery is tried.
# webhooks = []
# webhook_secret_file = "/etc/iotpki/webhook-secret"  # example
# webhook_max_attempts = 8
# Hours a dashboard session lasts.
# session_hours = 8.0

# Days before expiry at which a certificate's finding turns medium, then high.
# [monitoring.expiry]
# warning_days = 30
# critical_days = 7

# The same for CA certificates.
# [monitoring.ca_expiry]
# warning_days = 90
# critical_days = 30

# The same for the certificates of one profile.
# [monitoring.expiry_profiles.device]  # example
# warning_days = 10  # example
# critical_days = 3  # example
"""


def settings_template(home: Path) -> str:
    """The commented defaults of an installation at ``home``."""
    return _TEMPLATE.replace("@HOME@", str(home))


def write_settings_file(home: Path) -> bool:
    """Write ``<home>/iotpki.toml`` with the commented defaults (0600), unless one exists."""
    try:
        fd = os.open(home / CONFIG_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(settings_template(home))
    return True
