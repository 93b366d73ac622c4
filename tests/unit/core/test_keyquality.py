"""Key-quality tests: ROCA, small factors, Fermat, exponent and blocklists; refusal at issuance."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from iotpki.core import keyquality
from iotpki.core.keyquality import KeyBlocklist, blocklist_entry, has_roca_fingerprint, weaknesses
from iotpki.errors import KeyRejected
from iotpki.services.installation import Installation

from conftest import device_csr

_RNG = random.Random(20171016)


def _probable_prime(n: int) -> bool:
    if n % 2 == 0:
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _roca_prime(bits: int) -> int:
    """A prime of the RSALib form k*M + (65537^a mod M)."""
    m = keyquality._ROCA_MODULUS
    while True:
        p = _RNG.getrandbits(bits - m.bit_length() + 1) * m + pow(65537, _RNG.getrandbits(60), m)
        if p.bit_length() == bits and _probable_prime(p):
            return p


def _next_prime(n: int) -> int:
    n |= 1
    while not _probable_prime(n):
        n += 2
    return n


def _private_key(p: int, q: int) -> rsa.RSAPrivateKey:
    e, n = 65537, p * q
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, n)
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


@pytest.fixture(scope="module")
def roca_key() -> rsa.RSAPrivateKey:
    while True:
        p, q = _roca_prime(1024), _roca_prime(1024)
        if (p * q).bit_length() == 2048:
            return _private_key(p, q)


def test_good_keys_pass() -> None:
    assert weaknesses(rsa.generate_private_key(65537, 2048).public_key()) == []
    assert weaknesses(ec.generate_private_key(ec.SECP256R1()).public_key()) == []


def test_roca_fingerprint(roca_key: rsa.RSAPrivateKey) -> None:
    n = roca_key.public_key().public_numbers().n
    assert has_roca_fingerprint(n)
    assert [w.check for w in weaknesses(roca_key.public_key())] == ["roca"]
    good = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    assert not has_roca_fingerprint(good)


def test_small_factor_and_fermat() -> None:
    big = _next_prime(_RNG.getrandbits(1024) | 1 << 1023)
    small = rsa.RSAPublicNumbers(65537, 7919 * big).public_key()
    assert [w.check for w in weaknesses(small)] == ["small_factor"]
    close = rsa.RSAPublicNumbers(65537, big * _next_prime(big + 2)).public_key()
    assert [w.check for w in weaknesses(close)] == ["fermat"]


def test_exponent() -> None:
    key = rsa.generate_private_key(65537, 2048).public_key().public_numbers()
    assert "exponent" in [w.check for w in weaknesses(rsa.RSAPublicNumbers(3, key.n).public_key())]


def test_blocklist_in_openssl_blacklist_format(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048).public_key()
    n = key.public_numbers().n
    listed = tmp_path / "blacklist.RSA-2048"
    listed.write_text(f"# test list\n{blocklist_entry(n)}\n")
    blocklist = KeyBlocklist.from_files([listed])
    assert len(blocklist) == 1 and blocklist.contains(n)
    assert [w.check for w in weaknesses(key, blocklist)] == ["blocklist"]
    assert len(blocklist_entry(n)) == 20


def test_issuance_refuses_roca_key(inst: Installation, roca_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(KeyRejected, match="ROCA"):
        inst.authority.issue(device_csr("weak", key=roca_key), profile="device", actor="t")
    refused = [e for e in inst.store.audit_events() if e.action == "certificate.issue.refused"]
    assert refused and "ROCA" in str(refused[-1].data["reason"])
