"""A rotation campaign on a served instance, offered twice the renewals its rate allows: the
accepted renewal rate, and the rest told to retry later (EST 503 with Retry-After).

Run on demand: ``.venv/bin/python benchmarks/campaign_shedding.py [--rate 5 --seconds 30]``.
Needs ``taskset``. ``iotpki serve --workers 1`` (SQLite) on CPU 0; the load generator on CPU 1
sends EST ``simplereenroll`` requests, each over TLS with the device's current certificate, at
twice the campaign's ``--max-rate`` for ``--seconds``. Prints the offered and accepted rates and
the refusals with their Retry-After, per ten seconds and overall.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from est import PYTHON, iotpki_server

_PEM = serialization.Encoding.PEM
_INTERVAL = 10.0


def _csr(device: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def prepare(home: Path, work: Path, devices: int, rate: float) -> list[tuple[str, Path, Path]]:
    """``devices`` device certificates with their keys as files, and a campaign over them."""
    from iotpki.core.campaigns import Campaigns
    from iotpki.services.installation import open_installation
    from iotpki.settings import load_settings

    os.environ["IOTPKI_PASSPHRASE"] = "bench"
    inst = open_installation(load_settings(home), lint=False)
    out = []
    for n in range(devices):
        device = f"shed-{n:04d}"
        key = ec.generate_private_key(ec.SECP256R1())
        issued = inst.authority.issue(_csr(device, key), profile="device", actor="bench")
        chain, key_file = work / f"{device}.pem", work / f"{device}.key"
        chain.write_bytes(b"".join(c.public_bytes(_PEM) for c in issued.chain))
        key_file.write_bytes(
            key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        out.append((device, chain, key_file))
    Campaigns(inst.authority).create(
        name="shed", select="ca=issuing profile=device",
        deadline=inst.authority.clock.now() + timedelta(days=30), max_rate=rate, actor="bench",
    )  # fmt: skip
    inst.close()
    return out


def renew(port: int, device: str, chain: Path, key: Path) -> tuple[int, str | None]:
    """One simplereenroll with a new key over TLS with the current certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # measuring, not trusting
    context.load_cert_chain(chain, key)
    body = base64.encodebytes(
        _csr(device, ec.generate_private_key(ec.SECP256R1())).public_bytes(
            serialization.Encoding.DER
        )
    )
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    try:
        connection.request(
            "POST", "/.well-known/est/simplereenroll", body,
            {"Content-Type": "application/pkcs10"},
        )  # fmt: skip
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="the campaign's max renewals/s")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    offered = 2 * args.rate
    count = int(offered * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "iotpki"
        subprocess.run(
            [PYTHON, "-c", "from iotpki.cli.main import run; run()", "--home", str(home), "init"],
            env={**os.environ, "IOTPKI_PASSPHRASE": "bench"}, check=True, capture_output=True,
        )  # fmt: skip
        print(f"issuing {count} device certificates and the campaign ...", flush=True)
        fleet = prepare(home, work, count, args.rate)
        outcomes: list[tuple[float, int, str | None]] = []
        lock = threading.Lock()
        with iotpki_server(home) as port:
            print(f"offering {offered:g} renewals/s for {args.seconds:g} s ...", flush=True)
            start = time.monotonic()
            threads = []
            for i, (device, chain, key) in enumerate(fleet):
                due = start + i / offered
                time.sleep(max(0.0, due - time.monotonic()))

                def one(device: str = device, chain: Path = chain, key: Path = key) -> None:
                    status, retry = renew(port, device, chain, key)
                    with lock:
                        outcomes.append((time.monotonic() - start, status, retry))

                thread = threading.Thread(target=one)
                thread.start()
                threads.append(thread)
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - start
    per: dict[int, Counter[int]] = {}
    retry_after: Counter[str] = Counter()
    for at, status, retry in outcomes:
        per.setdefault(int(at // _INTERVAL), Counter())[status] += 1
        if retry:
            retry_after[retry] += 1
    print()
    print(f"{'seconds':>9} {'accepted/s':>11} {'503/s':>7} {'other':>6}")
    for bucket in sorted(per):
        c = per[bucket]
        other = sum(v for k, v in c.items() if k not in (200, 503))
        print(
            f"{bucket * _INTERVAL:>4.0f}-{(bucket + 1) * _INTERVAL:<4.0f} "
            f"{c[200] / _INTERVAL:>11.2f} {c[503] / _INTERVAL:>7.2f} {other:>6}"
        )
    accepted = sum(1 for _, s, _ in outcomes if s == 200)
    refused = sum(1 for _, s, _ in outcomes if s == 503)
    print()
    print(f"offered   {len(outcomes) / elapsed:.2f}/s (campaign max_rate {args.rate:g}/s)")
    print(f"accepted  {accepted / elapsed:.2f}/s ({accepted} renewals)")
    print(f"refused   {refused} with 503; Retry-After seen: {dict(retry_after.most_common(5))}")


if __name__ == "__main__":
    main()
