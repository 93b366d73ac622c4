"""CMP (RFC 9810, Lightweight CMP profile of RFC 9483) over HTTP: codec, protection, signer,
responder and routes."""

from iotpki.protocols.cmp.responder import CmpResponder
from iotpki.protocols.cmp.routes import routes
from iotpki.protocols.cmp.signer import Signers

__all__ = ["CmpResponder", "Signers", "routes"]
