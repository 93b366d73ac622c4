"""Where relying parties find a CA's status: AIA (OCSP, caIssuers), CRL and delta CRL URLs."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID


def revocation_extensions(public_base_url: str, ca_name: str) -> list[x509.ExtensionType]:
    """AIA (OCSP, caIssuers), CRL distribution point and freshest (delta) CRL of a CA."""
    base = public_base_url.rstrip("/")
    return [
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(f"{base}/ocsp"),
                ),
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(f"{base}/ca/{ca_name}.crt"),
                ),
            ]
        ),
        _distribution_points(f"{base}/crl/{ca_name}.crl", x509.CRLDistributionPoints),
        # RFC 5280 section 4.2.1.15: where the delta CRLs of this CA are found.
        _distribution_points(f"{base}/crl/{ca_name}-delta.crl", x509.FreshestCRL),
    ]


def _distribution_points(
    url: str, kind: type[x509.CRLDistributionPoints] | type[x509.FreshestCRL]
) -> x509.ExtensionType:
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return kind([point])
