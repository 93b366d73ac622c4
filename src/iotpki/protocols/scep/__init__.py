"""SCEP (RFC 8894): pkiMessage codec, envelope, responder and routes."""

from iotpki.protocols.scep.responder import CAPABILITIES, ScepResponder, ScepResponse
from iotpki.protocols.scep.routes import routes

__all__ = ["CAPABILITIES", "ScepResponder", "ScepResponse", "routes"]
