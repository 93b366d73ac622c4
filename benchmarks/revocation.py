"""Revocation at fleet scale: OCSP rate against peers, a 1M-entry CRL, revocation latency.

Run on demand: ``.venv/bin/python benchmarks/revocation.py [--requests N] [--revoked N]``.
Needs root (``unshare -n``), ``ab`` (apache2-utils), ``openssl``, ``cfssl`` (golang-cfssl),
``taskset``. Every responder runs in a private network namespace with only loopback, pinned to
core 0, loaded by ``ab`` with keep-alive pinned to core 1, one fresh responder per run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from iotpki.core.models import RevocationReason
from iotpki.installation import Installation, open_installation
from iotpki.settings import Settings

PEM = serialization.Encoding.PEM
PORT = 18080
SERVER_CORE, LOAD_CORE = "0", "1"
PASSPHRASE = "bench"


def _settings(home: Path, **extra: object) -> Settings:
    return Settings(home=home, passphrase=PASSPHRASE, lint_background=False, **extra)  # type: ignore[arg-type]


def _csr(cn: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )


def _in_netns(script: str) -> str:
    """Run a shell script in a private network namespace with loopback up; its stdout."""
    body = "ip link set lo up\n" + script
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", body], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"netns run failed: {done.stderr[-2000:]}")
    return done.stdout


def _ab(url: str, requests: int, post: Path | None) -> str:
    body = f"-p {post} -T application/ocsp-request " if post else ""
    return (
        f"taskset -c {LOAD_CORE} ab -q -k -n {requests} -c 32 {body}"
        f"'{url}' | grep -E 'Requests per second|Failed requests|Non-2xx'"
    )


def _rate(output: str) -> tuple[float, str]:
    rate = 0.0
    notes = []
    for line in output.splitlines():
        if line.startswith("Requests per second"):
            rate = float(line.split(":")[1].split()[0])
        elif "Failed" in line or "Non-2xx" in line:
            value = line.split(":")[1].strip()
            if value != "0":
                notes.append(f"{line.split(':')[0].strip()}={value}")
        if line.startswith("CHECK "):
            notes.append(line.removeprefix("CHECK "))
    return rate, ", ".join(notes)


def _wait_port(name: str) -> str:
    return textwrap.dedent(
        f"""
        for i in $(seq 1 200); do
          if (exec 3<>/dev/tcp/127.0.0.1/{PORT}) 2>/dev/null; then break; fi
          sleep 0.05
        done
        """
    ).replace("\n        ", "\n")


def ocsp_rates(work: Path, inst: Installation, requests: int) -> list[tuple[str, str, float, str]]:
    """Responses per second for the same certificate from each responder, GET and POST."""
    auth = inst.authority
    issuing = auth.get_ca("issuing").certificate
    leaf = auth.issue(_csr("bench-leaf"), profile="device", actor="bench").certificate
    others = [auth.issue(_csr(f"bench-{i}"), profile="device", actor="bench") for i in range(20)]
    for issued in others[:10]:
        auth.revoke(issued.record.serial, reason=RevocationReason.SUPERSEDED, actor="bench")
    # A responder certificate with a key on disk, for the peers (ours keeps its keys in memory).
    rkey = ec.generate_private_key(ec.SECP256R1())
    rcsr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench responder")]))
        .sign(rkey, hashes.SHA256())
    )
    rcert = auth.issue(rcsr, profile="ocsp-signer", ca="issuing", actor="bench").certificate
    files = {
        "issuing": issuing.public_bytes(PEM),
        "leaf": leaf.public_bytes(PEM),
        "rcert": rcert.public_bytes(PEM),
        "rkey": rkey.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    for name, data in files.items():
        (work / f"{name}.pem").write_bytes(data)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, issuing, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    (work / "req.der").write_bytes(request)
    encoded = quote(base64.b64encode(request).decode(), safe="")
    # OpenSSL's index: every certificate of the issuing CA, V or R.
    index = []
    for record in auth.search(_all_of("issuing")):
        expiry = record.not_after.strftime("%y%m%d%H%M%SZ")
        serial = record.serial.upper().rjust(2, "0")
        serial = ("0" + serial) if len(serial) % 2 else serial
        if record.revoked_at is not None:
            revoked = record.revoked_at.strftime("%y%m%d%H%M%SZ")
            index.append(f"R\t{expiry}\t{revoked}\t{serial}\tunknown\t/CN={record.subject}")
        else:
            index.append(f"V\t{expiry}\t\t{serial}\tunknown\t/CN={record.subject}")
    (work / "index.txt").write_text("\n".join(index) + "\n")
    # cfssl: responses pre-signed with `cfssl ocspsign`, served by `cfssl ocspserve`.
    signed_json = subprocess.run(
        ["cfssl", "ocspsign", "-ca", str(work / "issuing.pem"), "-responder",
         str(work / "rcert.pem"), "-responder-key", str(work / "rkey.pem"), "-cert",
         str(work / "leaf.pem"), "-status", "good"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    signed = json.loads(signed_json.stdout)["ocspResponse"]
    (work / "cfssl-responses").write_text(signed + "\n")

    home = inst.home
    iotpki_server = (
        f"IOTPKI_PASSPHRASE={PASSPHRASE} taskset -c {SERVER_CORE} {shlex.quote(sys.executable)} "
        f"-c {shlex.quote(_SERVE)} {shlex.quote(str(home))} {PORT} &"
    )
    peers = {
        "iotpki": (iotpki_server, True),
        "openssl ocsp": (
            f"taskset -c {SERVER_CORE} openssl ocsp -index {work}/index.txt -CA "
            f"{work}/issuing.pem -rsigner {work}/rcert.pem -rkey {work}/rkey.pem -port {PORT} "
            f"-nmin 60 -ignore_err 2>/dev/null &",
            False,
        ),
        "cfssl ocspserve": (
            f"taskset -c {SERVER_CORE} cfssl ocspserve -port {PORT} -responses "
            f"{work}/cfssl-responses -loglevel 5 2>/dev/null &",
            True,
        ),
    }
    rows = []
    for name, (start, probe_ok) in peers.items():
        # iotpki serves at /ocsp (DESIGN.md); the peers at the root path.
        prefix = "/ocsp" if name == "iotpki" else ""
        check = (
            f"openssl ocsp -issuer {work}/issuing.pem -cert {work}/leaf.pem -url "
            f"http://127.0.0.1:{PORT}{prefix or '/'} -no_nonce -noverify 2>/dev/null "
            "| grep -q ': good' && echo 'CHECK answered good' || echo 'CHECK no good answer'"
        )
        for method in ("GET", "POST"):
            url = f"http://127.0.0.1:{PORT}{prefix}" + (f"/{encoded}" if method == "GET" else "/")
            if name == "iotpki" and method == "POST":
                url = url.rstrip("/")
            post = work / "req.der" if method == "POST" else None
            # OpenSSL's responder hangs for good after a connection that sends nothing: no
            # port probe for it, just a pause; the correctness check runs after the load.
            wait = _wait_port(name) if probe_ok else "sleep 1\n"
            script = (
                f"{start}\nPID=$!\n{wait}\n"
                f"{'curl -s -o /dev/null ' + repr(url) if probe_ok else ''}\n"
                f"{_ab(url, requests, post)}\n{check if name != 'openssl ocsp' else ''}\n"
                "kill $PID; wait $PID 2>/dev/null; true\n"
            )
            out = _in_netns(script)
            rate, notes = _rate(out)
            rows.append((name, method, rate, notes))
    return rows


_SERVE = textwrap.dedent(
    """
    import sys, time, logging
    from pathlib import Path
    import uvicorn
    from iotpki.installation import open_installation
    from iotpki.settings import load_settings
    from iotpki.server import Service, build_http_app
    inst = open_installation(load_settings(Path(sys.argv[1])), lint=False)
    service = Service(inst)
    service.revocation.start()
    uvicorn.run(build_http_app(service), host="127.0.0.1", port=int(sys.argv[2]),
                http="httptools", loop="uvloop", log_level="warning", access_log=False,
                lifespan="off")
    """
)


def _all_of(ca: str) -> object:
    from iotpki.core.models import CertificateQuery

    return CertificateQuery(ca_name=ca, limit=1000)


def fill_revoked(inst: Installation, count: int) -> None:
    """Add ``count`` revoked certificate rows to the issuing CA straight into SQLite."""
    db = inst.settings.effective_database_url.removeprefix("sqlite:///")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    later = now + timedelta(days=365)
    reasons = ["keyCompromise", "superseded", "cessationOfOperation", None]
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO certificates (ca_name, serial, profile, device_id, subject, sans, "
            "not_before, not_after, key_fingerprint, key_algorithm, der, status, revoked_at, "
            "revocation_reason, issued_at) VALUES "
            "('issuing', ?, 'device', NULL, ?, '[]', ?, ?, ?, 'p256', x'00', 'revoked', ?, ?, ?)",
            (
                (
                    format((0x5A << 152) + i * 104729, "x"),
                    f"CN=bulk-{i}",
                    now - timedelta(days=30),
                    later,
                    format(i, "064x"),
                    now - timedelta(seconds=i % 86400),
                    reasons[i % 4],
                    now - timedelta(days=30),
                )
                for i in range(count)
            ),
        )
    conn.close()


_CRL_CHILD = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    from iotpki.installation import open_installation
    from iotpki.settings import load_settings
    from iotpki.server import Service
    inst = open_installation(load_settings(Path(sys.argv[1])), lint=False)
    publisher = Service(inst).revocation.publisher
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    crl = publisher.generate("issuing", "full", actor="bench")
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(sys.argv[2]).write_bytes(crl.der)
    print(f"{took:.3f} {peak} {base} {crl.entries} {len(crl.der)}")
    """
)

_BUILDER_CHILD = textwrap.dedent(
    """
    import resource, sys, time
    from datetime import UTC, datetime, timedelta
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    count = int(sys.argv[1])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    flags = [x509.ReasonFlags.key_compromise, x509.ReasonFlags.superseded,
             x509.ReasonFlags.cessation_of_operation, None]
    rows = [((0x5A << 152) + i * 104729, now - timedelta(seconds=i % 86400), flags[i % 4])
            for i in range(count)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    entries = []
    for s, t, flag in rows:  # the same entries as ours: time, serial and reason
        entry = x509.RevokedCertificateBuilder().serial_number(s).revocation_date(t)
        if flag is not None:
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        entries.append(entry.build())
    crl = x509.CertificateRevocationListBuilder(
        issuer_name=name, last_update=now, next_update=now + timedelta(days=1),
        revoked_certificates=entries,
    ).sign(key, hashes.SHA256())
    took = time.perf_counter() - start
    print(f"{took:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} {base}")
    """
)


def crl_figures(work: Path, inst: Installation, count: int) -> list[tuple[str, str]]:
    """Generate the issuing CA's complete CRL in a fresh process: time, peak RSS, size."""
    out_path = work / "big.crl"
    done = subprocess.run(
        [sys.executable, "-c", _CRL_CHILD, str(inst.home), str(out_path)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "IOTPKI_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    took, peak, base, entries, size = done.stdout.split()
    der = out_path.read_bytes()
    start = time.perf_counter()
    crl = x509.load_der_x509_crl(der)
    issuer = inst.authority.get_ca("issuing").certificate
    valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    parse = time.perf_counter() - start
    (work / "issuing.pem").write_bytes(issuer.public_bytes(PEM))
    verify = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(out_path), "-CAfile",
         str(work / "issuing.pem"), "-verify", "-noout"],
        capture_output=True, text=True,
    )  # fmt: skip
    peer = subprocess.run(
        [sys.executable, "-c", _BUILDER_CHILD, entries], capture_output=True, text=True, check=True
    )
    peer_took, peer_peak, _ = peer.stdout.split()
    return [
        ("entries", entries),
        ("iotpki: generate (query + encode + sign + store)", f"{float(took):.2f} s"),
        ("iotpki: peak RSS of the generating process", f"{int(peak) / 1024:.0f} MiB"),
        ("iotpki: RSS before generating", f"{int(base) / 1024:.0f} MiB"),
        ("CRL size", f"{int(size) / 1e6:.1f} MB"),
        ("cryptography parse + signature check", f"{valid}, {parse:.2f} s"),
        ("openssl crl -verify", verify.stderr.strip()),
        ("cryptography CertificateRevocationListBuilder", f"{float(peer_took):.2f} s"),
        ("  its peak RSS", f"{int(peer_peak) / 1024:.0f} MiB"),
    ]


def revocation_latency(inst: Installation, samples: int) -> list[tuple[str, str]]:
    """Revoke calls with many revoked rows, then the delay until OCSP and the CRLs show it."""
    from iotpki.server import Service

    auth = inst.authority
    targets = [
        auth.issue(_csr(f"lat-{i}"), profile="device", actor="bench") for i in range(samples)
    ]
    service = Service(inst)
    service.revocation.refresh_responders()
    times = []
    for issued in targets:
        start = time.perf_counter()
        auth.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="bench")
        times.append(time.perf_counter() - start)
    times.sort()
    # Delay until visible: OCSP at once (the cache entry is dropped in the revoke listener),
    # the delta CRL after revocation_delay plus generation, both measured with the real jobs.
    probe = auth.issue(_csr("lat-probe"), profile="device", actor="bench")
    req = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(probe.certificate, probe.chain[1], hashes.SHA1())
        .build()
    )
    from iotpki.core.revocation import CertId

    cert_id = CertId("sha1", req.issuer_name_hash, req.issuer_key_hash, req.serial_number)
    responder = service.revocation.responder
    responder.answer_one(cert_id, auth.clock.now())  # cached as good
    service.revocation.publish_due()
    service.revocation.runner.start()
    start = time.perf_counter()
    auth.revoke(probe.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="bench")
    _, entry = responder.answer_one(cert_id, auth.clock.now())
    ocsp_delay = time.perf_counter() - start
    assert ocsp.load_der_ocsp_response(entry.der).certificate_status is ocsp.OCSPCertStatus.REVOKED
    delta_delay = full_delay = None
    while time.perf_counter() - start < 300 and (delta_delay is None or full_delay is None):
        for kind in ("delta", "full"):
            crl = service.revocation.cached_crl("issuing", kind)  # type: ignore[arg-type]
            if crl is None or crl.der is None:
                continue
            if (kind == "delta" and delta_delay is None) or (kind == "full" and full_delay is None):
                parsed = x509.load_der_x509_crl(crl.der)
                if parsed.get_revoked_certificate_by_serial_number(probe.certificate.serial_number):
                    if kind == "delta":
                        delta_delay = time.perf_counter() - start
                    else:
                        full_delay = time.perf_counter() - start
        time.sleep(0.1)
    service.revocation.stop()
    config = service.revocation.config
    return [
        ("revoke() median", f"{statistics.median(times) * 1000:.2f} ms"),
        ("revoke() p95", f"{times[int(len(times) * 0.95)] * 1000:.2f} ms"),
        ("revoke() max", f"{times[-1] * 1000:.2f} ms"),
        ("OCSP shows it after", f"{ocsp_delay * 1000:.1f} ms (revoke + one on-demand signing)"),
        (
            f"delta CRL shows it after (revocation_delay {config.revocation_delay})",
            f"{delta_delay:.1f} s" if delta_delay else "not within 300 s",
        ),
        (
            f"complete CRL shows it after (full_crl_delay {config.full_crl_delay})",
            f"{full_delay:.1f} s" if full_delay else "not within 300 s",
        ),
    ]


def _table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n## {title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    """Run every figure and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--revoked", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--skip-ocsp", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        settings = _settings(
            home,
            http_port=PORT,
            revocation={"revocation_delay": "2s", "full_crl_delay": "10s"},
        )
        inst = open_installation(settings, create=True)
        inst.initialise(actor="bench")
        print(f"# revocation benchmark, {os.cpu_count()} cores, python {sys.version.split()[0]}")
        if not args.skip_ocsp:
            rates = ocsp_rates(work, inst, args.requests)
            _table(
                f"OCSP, one server core, ab -k -c 32 -n {args.requests}",
                [(n, m, f"{r:,.0f}", note) for n, m, r, note in rates],
                ("responder", "method", "responses/s", "notes"),
            )
        start = time.perf_counter()
        fill_revoked(inst, args.revoked)
        print(f"\n(filled {args.revoked:,} revoked rows in {time.perf_counter() - start:.0f} s)")
        _table(
            f"CRL with {args.revoked:,} revoked entries",
            crl_figures(work, inst, args.revoked),
            ("figure", "value"),
        )
        _table(
            f"Revocation with {args.revoked:,} already revoked ({args.samples} calls, SQLite)",
            revocation_latency(inst, args.samples),
            ("figure", "value"),
        )
        inst.close()
        print(f"\nmax RSS of the benchmark process: {_maxrss_mib():.0f} MiB")


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
