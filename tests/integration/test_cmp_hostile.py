"""Hostile CMP messages, in process over ASGI: every malformed or mis-protected PKIMessage gets
a protected ``error`` PKIMessage with its failInfo, an audit event and no certificate; never a
5xx. Valid requests are made by ``openssl cmp -reqout`` against no server, then altered."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from pyasn1_alt_modules import rfc9480
from starlette.testclient import TestClient

from fuzzkit import FUZZ, mutated
from iotpki.core.models import CertificateQuery
from iotpki.protocols.cmp import codec
from iotpki.protocols.cmp.codec import FailInfo
from iotpki.protocols.cmp.protection import PBMAC1, MacParameters, read_mac_parameters
from iotpki.server import Service, build_http_app, enrollment
from iotpki.services.installation import Installation

from conftest import make_installation

_URL = "/.well-known/cmp"
_CMP = {"content-type": "application/pkixcmp"}


class Site:
    """One installation behind the plain-HTTP listener, and a way to make real requests."""

    def __init__(self, home: Path, work: Path) -> None:
        self.inst: Installation = make_installation(home)  # real clock: openssl stamps the time
        self.http = TestClient(build_http_app(Service(self.inst)))
        self.work = work
        self.count = 0

    def ir(self, device: str, *, secret: str | None = None) -> bytes:
        """An ir for ``device`` MAC-protected with a new one-time secret (or ``secret``)."""
        if secret is None:
            secret, _ = enrollment(self.inst).create_secret(device, actor="test")
        self.count += 1
        key, out = self.work / f"k{self.count}.pem", self.work / f"ir{self.count}.der"
        subprocess.run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
            check=True,
            timeout=60,
        )
        subprocess.run(
            ["openssl", "cmp", "-cmd", "ir", "-server", "127.0.0.1:1", "-ref", device,
             "-secret", f"pass:{secret}", "-recipient", "/CN=iotpki Issuing CA",
             "-newkey", str(key), "-subject", f"/CN={device}", "-certout", "unused.pem",
             "-reqout", str(out)],
            capture_output=True, timeout=60, cwd=self.work,
        )  # fmt: skip
        return out.read_bytes()

    def post(self, der: bytes) -> codec.ReadMessage:
        response = self.http.post(_URL, content=der, headers=_CMP)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/pkixcmp"
        return codec.decode(response.content)

    def certificates(self) -> int:
        return len(self.inst.authority.search(CertificateQuery(profile="device", limit=10_000)))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    made = Site(tmp_path_factory.mktemp("cmp") / "home", tmp_path_factory.mktemp("cmp-work"))
    with made.http:
        yield made
    made.inst.close()


def _fail(answer: codec.ReadMessage) -> set[FailInfo]:
    assert answer.kind == "error", answer.kind
    bits = answer.body["pKIStatusInfo"]["failInfo"]
    return {info for info in FailInfo if info < len(bits) and bits[info]}


def _altered(der: bytes, change: Callable[[rfc9480.PKIMessage], None]) -> bytes:
    """``der`` with its message changed (the protection is no longer right unless redone)."""
    message = codec.decode(der).message
    change(message)
    return codec.encode(message)


def test_mutated_requests_get_error_messages_and_issue_nothing(site: Site) -> None:
    request = site.ir("hostile-1")
    before = site.certificates()
    seen: set[str] = set()

    @FUZZ
    @given(der=mutated(request))
    def probe(der: bytes) -> None:
        answer = site.post(der)
        seen.add(answer.kind)
        assert answer.kind in ("error", "ip")

    probe()
    # A mutation that keeps the MAC right can only be one in a part the MAC does not cover
    # (none in an ir without extraCerts), and the transaction is spent by the first try.
    assert site.certificates() - before <= 1
    assert "error" in seen


def test_a_replayed_request_is_refused_with_transaction_id_in_use(site: Site) -> None:
    request = site.ir("hostile-2")
    assert site.post(request).kind == "ip"
    assert _fail(site.post(request)) == {FailInfo.TRANSACTION_ID_IN_USE}


def test_header_checks_answer_with_their_failinfo(site: Site) -> None:
    request = site.ir("hostile-3")
    before = site.certificates()

    def version(message: rfc9480.PKIMessage) -> None:
        message["header"]["pvno"] = 1

    def stale(message: rfc9480.PKIMessage) -> None:
        header = message["header"]
        header["messageTime"] = header["messageTime"].clone("20200101000000Z")

    def short_nonce(message: rfc9480.PKIMessage) -> None:
        message["header"]["senderNonce"] = b"short"

    assert _fail(site.post(_altered(request, version))) == {FailInfo.UNSUPPORTED_VERSION}
    unprotected = rfc9480.PKIMessage()
    unprotected["header"] = codec.decode(request).message["header"]
    unprotected["body"] = codec.decode(request).message["body"]
    assert _fail(site.post(codec.encode(unprotected))) == {FailInfo.BAD_MESSAGE_CHECK}
    assert _fail(site.post(_altered(request, stale))) == {FailInfo.BAD_TIME}
    assert _fail(site.post(_altered(request, short_nonce))) == {FailInfo.BAD_SENDER_NONCE}
    assert _fail(site.post(b"")) == {FailInfo.BAD_DATA_FORMAT}
    assert _fail(site.post(request + b"\x00")) == {FailInfo.BAD_DATA_FORMAT}
    assert site.certificates() == before


def test_a_wrong_mac_is_refused_audited_and_counted(site: Site) -> None:
    site.ir("hostile-4")  # the device has a live secret
    wrong = site.ir("hostile-4", secret="guessed-wrong")
    assert _fail(site.post(wrong)) == {FailInfo.BAD_MESSAGE_CHECK}
    actions = [event.action for event in site.inst.store.audit_events()]
    assert "cmp.authenticate.refused" in actions


def test_unknown_label_and_huge_iteration_counts(site: Site) -> None:
    request = site.ir("hostile-5")
    response = site.http.post(f"{_URL}/p/no-such-label", content=request, headers=_CMP)
    assert _fail(codec.decode(response.content)) == {FailInfo.WRONG_AUTHORITY}
    slow = MacParameters(PBMAC1, b"s" * 16, 10_000_000, "sha256", "sha256").algorithm()

    def costly(message: rfc9480.PKIMessage) -> None:
        message["header"]["protectionAlg"]["parameters"] = slow["parameters"]

    assert _fail(site.post(_altered(request, costly))) == {FailInfo.BAD_ALG}
    oversized = site.http.post(_URL, content=b"\x30" * (65 * 1024), headers=_CMP)
    assert oversized.status_code == 413
    actions = [event.action for event in site.inst.store.audit_events()]
    assert "cmp.transport.refused" in actions


def test_pbmac1_parameters_round_trip() -> None:
    params = MacParameters(PBMAC1, b"salt" * 4, 1000, "sha256", "sha512", 64)
    algorithm = params.algorithm()
    read = read_mac_parameters(str(algorithm["algorithm"]), bytes(algorithm["parameters"]))
    assert read == params
    assert read.verify(b"secret", b"data", params.tag(b"secret", b"data"))
    assert not read.verify(b"other", b"data", params.tag(b"secret", b"data"))
