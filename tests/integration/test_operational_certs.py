"""The PKI's own certificates: the HTTPS listener's lints clean, the overview counts lint errors
as findings, and the fleet's expiry cards leave out the server's own certificates."""

from __future__ import annotations

import re
from datetime import timedelta

from cryptography import x509
from starlette.testclient import TestClient

from iotpki.core.access import create_token
from iotpki.core.authority import serial_hex
from iotpki.core.models import LintFinding, Role
from iotpki.core.policy import INTERNAL_SERVER_PROFILE
from iotpki.monitoring.service import Monitor
from iotpki.server import Service, build_https_app, ensure_tls_identity
from iotpki.services.installation import Installation

from conftest import device_csr


def _overview_page(inst: Installation) -> str:
    token = create_token(
        inst.store, inst.authority.clock, role=Role.ADMIN, description="", actor="t"
    )[0]
    client = TestClient(build_https_app(Service(inst)), base_url="https://testserver")
    assert client.post("/ui/login", data={"token": token, "next": "/"}).status_code == 200
    page = client.get("/")
    assert page.status_code == 200, page.text
    return page.text


def test_fresh_installations_server_certificate_lints_clean(inst: Installation) -> None:
    _, cert_path = ensure_tls_identity(inst)
    leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    record = inst.authority.get(serial_hex(leaf.serial_number))
    assert record.profile == INTERNAL_SERVER_PROFILE
    assert {"dns:localhost", "ip:127.0.0.1"} <= set(record.sans)
    inst.authority.lint_pending()
    findings = inst.store.lint_findings(record.ca_name, record.serial)
    assert not [f for f in findings if f.severity in ("ERROR", "FATAL")], findings
    assert inst.authority.get(record.serial).lint_status == "pass"
    assert Monitor(inst).overview()["lint_errors"] == []


def test_overview_counts_lint_errors_as_findings(inst: Installation) -> None:
    assert "No open findings" in _overview_page(inst)
    record = inst.authority.issue(device_csr("dev-lint"), profile="device", actor="t").record
    finding = LintFinding("ERROR", "pkix.invalid_domain_name_syntax", "san.0", "bad name")
    inst.store.record_lint(record.ca_name, record.serial, [finding])
    assert Monitor(inst).overview()["lint_errors"] == [("pkix.invalid_domain_name_syntax", 1)]
    page = _overview_page(inst)
    assert "No open findings" not in page
    assert "lint pkix.invalid_domain_name_syntax" in page


def test_expiry_cards_leave_out_the_pkis_own_certificates(inst: Installation) -> None:
    ensure_tls_identity(inst)
    inst.authority.issue(device_csr("ocsp"), profile="ocsp-signer", actor="system:ocsp")
    inst.authority.issue(
        device_csr("dev-soon"), profile="device", actor="t", lifetime=timedelta(days=3)
    )
    stats = Monitor(inst).overview()
    assert stats["expiring"][7] == 1  # the device, not the 7-day OCSP responder certificate
    assert sum(n for _, n in stats["timeline"]) == 1
    own = {profile: n for profile, n, _ in stats["operational"]}
    assert own == {INTERNAL_SERVER_PROFILE: 1, "ocsp-signer": 1, "sub-ca": 1}
    page = _overview_page(inst)
    table = re.search(r'<table id="operational">.*?</table>', page, re.S)
    assert table is not None and "ocsp-signer" in table.group(0)
