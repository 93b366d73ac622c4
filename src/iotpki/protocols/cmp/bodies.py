"""The PKIBody of each answer (RFC 9483 section 4): certificate responses, revocation
responses, confirmations, general responses and errors."""

from __future__ import annotations

from cryptography import x509
from pyasn1.type import tag, univ
from pyasn1_alt_modules import rfc9480

from iotpki.protocols.cmp.codec import FailInfo, cmp_certificate, status_info

__all__ = ["RESPONSES", "cert_rep", "error", "gen_rep", "pki_conf", "rev_rep"]

RESPONSES = {"ir": "ip", "cr": "cp", "p10cr": "cp", "kur": "kup"}
"""The body that answers each certificate request."""

_REJECTION = 2


def _context(number: int, constructed: bool = False) -> tag.Tag:
    form = tag.tagFormatConstructed if constructed else tag.tagFormatSimple
    return tag.Tag(tag.tagClassContext, form, number)


def cert_rep(
    request: str, cert_req_id: int, cert: x509.Certificate, ca_pubs: list[x509.Certificate]
) -> rfc9480.PKIBody:
    """ip, cp or kup carrying one issued certificate (and trust anchors for an ``ir``)."""
    body = rfc9480.PKIBody()
    rep = body[RESPONSES[request]]
    if ca_pubs:
        for anchor in ca_pubs:
            rep["caPubs"].append(cmp_certificate(anchor))
    response = rfc9480.CertResponse()
    response["certReqId"] = cert_req_id
    response["status"] = status_info(0)
    cmp_certificate(cert, into=response["certifiedKeyPair"]["certOrEncCert"]["certificate"])
    rep["response"].append(response)
    return body


def rev_rep() -> rfc9480.PKIBody:
    """rp: the one revocation asked for was done."""
    body = rfc9480.PKIBody()
    body["rp"]["status"].append(status_info(0))
    return body


def pki_conf() -> rfc9480.PKIBody:
    """pkiconf: the confirmation was received."""
    body = rfc9480.PKIBody()
    body["pkiconf"] = univ.Null("").subtype(explicitTag=_context(19))
    return body


def gen_rep(answers: list[rfc9480.InfoTypeAndValue]) -> rfc9480.PKIBody:
    """genp with one InfoTypeAndValue per question answered."""
    body = rfc9480.PKIBody()
    genp = body["genp"]
    for answer in answers:
        genp.append(answer)
    return body


def error(text: str, fail: FailInfo) -> rfc9480.PKIBody:
    """error: rejection with a failInfo and the reason in words."""
    body = rfc9480.PKIBody()
    content = body["error"]
    content["pKIStatusInfo"] = status_info(_REJECTION, text, fail)
    return body
