"""Readable extension values on the certificate page."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from iotpki.web.extensions import describe_extension

_URI = x509.UniformResourceIdentifier


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (x509.BasicConstraints(ca=True, path_length=0), "CA: true, path length 0"),
        (x509.BasicConstraints(ca=False, path_length=None), "CA: false"),
        (
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            "digital signature, key encipherment",
        ),
        (
            x509.KeyUsage(False, False, False, False, True, False, False, True, False),
            "key agreement, encipher only",
        ),
        (
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, x509.ObjectIdentifier("1.2.3.4")]
            ),
            "clientAuth, 1.2.3.4",
        ),
        (
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("a.example"),
                    _URI("urn:dev:ops:x"),
                    x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
                ]
            ),
            "DNS:a.example, URI:urn:dev:ops:x, IP:192.0.2.1",
        ),
        (x509.SubjectKeyIdentifier(b"\x01\xab"), "01:ab"),
        (
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, _URI("http://o/"))]
            ),
            "OCSP URI:http://o/",
        ),
        (
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([_URI("http://c/x.crl")], None, None, None)]
            ),
            "URI:http://c/x.crl",
        ),
    ],
)
def test_describe(value: x509.ExtensionType, text: str) -> None:
    assert describe_extension(value) == text
