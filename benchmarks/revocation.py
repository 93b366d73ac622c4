"""Revocation at fleet scale: OCSP rate against peers, a 1M-entry CRL, revocation latency.

Run on demand: ``.venv/bin/python benchmarks/revocation.py [--requests N] [--revoked N]``.
Needs root (``unshare -n``), ``ab`` (apache2-utils), ``openssl``, ``cfssl`` (golang-cfssl),
``taskset``. Every responder runs in a private network namespace with only loopback, pinned to
core 0, loaded by ``ab`` with keep-alive pinned to core 1, one fresh responder per run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from iotpki.core.models import CertificateQuery, CertificateRecord, RevocationReason
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import Settings

PEM = serialization.Encoding.PEM
PORT = 18080
SERVER_CORE, LOAD_CORE = "0", "1"
PASSPHRASE = "bench"
REVOCATION = {"revocation_delay": "2s", "full_crl_delay": "10s"}


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
    # Its own process group, so that a responder left hanging is killed with the shell.
    proc = subprocess.Popen(
        ["unshare", "-n", "bash", "-c", body],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"netns run failed: {err[-2000:]}")
    return out


def _ab(url: str, requests: int, post: Path | None) -> str:
    body = f"-p {post} -T application/ocsp-request " if post else ""
    return (
        f"timeout 300 taskset -c {LOAD_CORE} ab -s 10 -q -k -n {requests} -c 32 {body}"
        f"'{url}' | grep -E 'Requests per second|Complete requests|Non-2xx|Connect:'"
    )


def _wrk(url: str, script: Path | None) -> str:
    """wrk: HTTP/1.1 with keep-alive (ab speaks HTTP/1.0, whose keep-alive uvicorn refuses)."""
    body = f"-s {script} " if script else ""
    return f"timeout 60 taskset -c {LOAD_CORE} wrk -t1 -c32 -d10s {body}'{url}'"


def _rate(output: str, requests: int) -> tuple[float, int, str]:
    """Requests/s and requests completed, from ab or wrk, with every real failure named.

    ab counts a response whose length differs from the first as "failed (Length)": OpenSSL
    signs each response afresh and ECDSA signatures vary by a byte, so those are not failures.
    """
    rate, done = 0.0, 0
    notes = []
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith(("Requests per second", "Requests/sec")):
            rate = float(line.split(":")[1].split()[0])
        elif line.startswith("Complete requests"):
            done = int(line.split(":")[1])
            if done != requests:
                notes.append(f"only {done} requests completed")
        elif " requests in " in line:  # wrk: "123456 requests in 10.00s, 120.00MB read"
            done = int(line.split()[0])
        elif line.startswith(("Non-2xx", "Socket errors")):
            notes.append(line.replace(" responses", ""))
        elif line.startswith("(Connect:"):
            counts = dict(part.strip().split(": ") for part in line[1:-1].split(","))
            bad = {k: v for k, v in counts.items() if k != "Length" and v != "0"}
            notes.extend(f"{k.lower()} errors={v}" for k, v in bad.items())
            if counts.get("Length", "0") != "0":
                notes.append(f"{counts['Length']} lengths differ (fresh signatures)")
    return rate, done, ", ".join(notes)


def _wait_port(name: str) -> str:
    return textwrap.dedent(
        f"""
        for i in $(seq 1 200); do
          if (exec 3<>/dev/tcp/127.0.0.1/{PORT}) 2>/dev/null; then break; fi
          sleep 0.05
        done
        """
    ).replace("\n        ", "\n")


# cfssl's certificate database, from its certdb/sqlite/migrations/001_CreateCertificates.sql
# (Debian's golang-cfssl ships no schema): ``ocsprefresh`` signs a response for every unexpired
# row of ``certificates`` into ``ocsp_responses``, ``ocspdump`` writes them out for ``ocspserve``.
_CFSSL_CERTDB = """
CREATE TABLE certificates (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, created_at timestamp, expiry timestamp, revoked_at timestamp,
  pem blob NOT NULL, PRIMARY KEY(serial_number, authority_key_identifier));
CREATE INDEX certificates_created_at ON certificates (created_at);
CREATE INDEX certificates_revoked_at ON certificates (revoked_at);
CREATE TABLE ocsp_responses (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier)
    REFERENCES certificates(serial_number, authority_key_identifier));
"""
_CFSSL_REASONS = {RevocationReason.SUPERSEDED: 4}


def _cfssl_responses(
    work: Path, issuing: x509.Certificate, records: list[CertificateRecord]
) -> Path:
    """Pre-sign responses for every certificate of the CA the way cfssl does: certdb + refresh."""
    db = work / "cfssl-certdb.sqlite"
    aki = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    stamp = "%Y-%m-%d %H:%M:%S"
    rows = []
    for record in records:
        revoked = record.revoked_at is not None
        rows.append(
            (
                str(int(record.serial, 16)),  # cfssl keys certificates by decimal serial
                aki.hex(),
                "",
                "revoked" if revoked else "good",
                _CFSSL_REASONS.get(record.revocation_reason, 0) if revoked else 0,  # type: ignore[arg-type]
                record.not_before.strftime(stamp),
                record.not_after.strftime(stamp),
                # cfssl scans revoked_at into a time.Time: "good" rows carry the zero time.
                record.revoked_at.strftime(stamp) if record.revoked_at else "0001-01-01 00:00:00",
                x509.load_der_x509_certificate(record.der).public_bytes(PEM).decode(),
            )
        )
    conn = sqlite3.connect(db)
    with conn:
        conn.executescript(_CFSSL_CERTDB)
        conn.executemany("INSERT INTO certificates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    config = work / "cfssl-db.json"
    config.write_text(json.dumps({"driver": "sqlite3", "data_source": str(db)}))
    subprocess.run(
        ["cfssl", "ocsprefresh", "-db-config", str(config), "-ca", str(work / "issuing.pem"),
         "-responder", str(work / "rcert.pem"), "-responder-key", str(work / "rkey.pem")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    dumped = subprocess.run(
        ["cfssl", "ocspdump", "-db-config", str(config)], capture_output=True, text=True, check=True
    ).stdout
    if len(dumped.split()) != len(rows):
        raise RuntimeError(f"cfssl pre-signed {len(dumped.split())} of {len(rows)} responses")
    responses = work / "cfssl-responses"
    responses.write_text(dumped)
    return responses


def _check_answer(der_path: Path, leaf: x509.Certificate, responder: x509.Certificate) -> str:
    """Whether a response saved after the load is a signed ``good`` answer for the leaf."""
    try:
        answer = ocsp.load_der_ocsp_response(der_path.read_bytes())
    except (OSError, ValueError) as exc:
        return f"no valid response ({exc})"
    if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"response status {answer.response_status.name}"
    signer = next(iter(answer.certificates), responder).public_key()
    if not isinstance(signer, ec.EllipticCurvePublicKey):
        return "not signed with the P-256 responder key"
    try:
        signer.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "bad signature"
    if answer.serial_number != leaf.serial_number:
        return "answered another serial"
    return f"checked: {answer.certificate_status.name.lower()}, signature valid"


def ocsp_rates(
    work: Path, inst: Installation, requests: int
) -> list[tuple[str, str, str, float, float, str]]:
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
    # RFC 6960 appendix A.1: GET {url}/{url-encoding of base-64 encoding of the DER request}.
    encoded = quote(base64.b64encode(request).decode(), safe="")
    records = list(auth.search(_all_of("issuing")))
    # OpenSSL's index: every certificate of the issuing CA, V or R.
    index = []
    for record in records:
        expiry = record.not_after.strftime("%y%m%d%H%M%SZ")
        serial = record.serial.upper().rjust(2, "0")
        serial = ("0" + serial) if len(serial) % 2 else serial
        if record.revoked_at is not None:
            revoked = record.revoked_at.strftime("%y%m%d%H%M%SZ")
            index.append(f"R\t{expiry}\t{revoked}\t{serial}\tunknown\t/CN={record.subject}")
        else:
            index.append(f"V\t{expiry}\t\t{serial}\tunknown\t/CN={record.subject}")
    (work / "index.txt").write_text("\n".join(index) + "\n")
    cfssl_responses = _cfssl_responses(work, issuing, records)

    iotpki = Path(sys.executable).with_name("iotpki")
    # (start command, whether a port probe is safe, URL path prefix)
    peers = {
        "iotpki": (
            f"IOTPKI_PASSPHRASE={PASSPHRASE} taskset -c {SERVER_CORE} {iotpki} --home "
            f"{shlex.quote(str(inst.home))} serve --http-port {PORT} --https-port {PORT + 1} "
            ">/dev/null 2>&1 &",
            True,
            "/ocsp",
        ),
        "openssl ocsp": (
            f"taskset -c {SERVER_CORE} openssl ocsp -index {work}/index.txt -CA "
            f"{work}/issuing.pem -rsigner {work}/rcert.pem -rkey {work}/rkey.pem -port {PORT} "
            f"-nmin 60 -ignore_err 2>/dev/null &",
            False,
            "",
        ),
        "cfssl ocspserve": (
            f"taskset -c {SERVER_CORE} cfssl ocspserve -port {PORT} -responses "
            f"{cfssl_responses} -loglevel 5 2>/dev/null &",
            True,
            "",
        ),
    }
    (work / "post.lua").write_text(
        f'wrk.method = "POST"\nwrk.body = io.open("{work}/req.der", "rb"):read("*a")\n'
        'wrk.headers["Content-Type"] = "application/ocsp-request"\n'
    )
    rows = []
    for name, (start, probe_ok, prefix) in peers.items():
        for method in ("GET", "POST"):
            url = f"http://127.0.0.1:{PORT}{prefix}" + (f"/{encoded}" if method == "GET" else "/")
            post = work / "req.der" if method == "POST" else None
            saved = work / f"answer-{name.split()[0]}-{method}.der"
            fetch = (
                f"curl -s --max-time 20 -o {saved} -w '%{{http_code}}' "
                + (
                    f"--data-binary @{post} -H 'Content-Type: application/ocsp-request' "
                    if post
                    else ""
                )
                + f"'{url}' | sed 's/^/STATUS /'; echo"
            )
            cpu = "awk '{print \"CPU \" $14 + $15}' /proc/$PID/stat"
            for loader in ("ab -k", "wrk"):
                saved.unlink(missing_ok=True)
                load = (
                    _ab(url, requests, post)
                    if loader == "ab -k"
                    else _wrk(url, work / "post.lua" if post else None)
                )
                # OpenSSL's responder hangs for good after a connection that sends nothing:
                # no port probe for it, just a pause; and after the load it is hung (the
                # loaders leave idle connections behind), so its answer is checked before.
                # iotpki signs the first request of a certificate on demand, then the load
                # is served from the cache and its answer checked again after.
                wait = _wait_port(name) if probe_ok else "sleep 1\n"
                script = (
                    f"{start}\nPID=$!\n{wait}\n{fetch}\n{cpu}\n{load}\n{cpu}\n"
                    f"{fetch if probe_ok else ''}\nkill $PID; wait $PID 2>/dev/null; true\n"
                )
                out = _in_netns(script)
                rate, done, notes = _rate(out, requests)
                ticks = [int(line.split()[1]) for line in out.splitlines() if line[:4] == "CPU "]
                per = (ticks[1] - ticks[0]) / os.sysconf("SC_CLK_TCK") / done if done else 0.0
                statuses = {line.split()[1] for line in out.splitlines() if line[:7] == "STATUS "}
                if statuses != {"200"}:
                    notes = ", ".join(filter(None, [notes, f"HTTP {'/'.join(sorted(statuses))}"]))
                    if name.startswith("cfssl") and method == "GET":
                        notes += (
                            " (Debian's cfssl 1.2.0 base64-decodes the GET path with its leading"
                            " '/', so it answers no GET)"
                        )
                    rate = per = 0.0
                else:
                    notes = ", ".join(filter(None, [notes, _check_answer(saved, leaf, rcert)]))
                rows.append((name, method, loader, rate, per, notes))
    return rows


def _all_of(ca: str) -> CertificateQuery:
    return CertificateQuery(ca_name=ca, limit=1000)


def fill_revoked(inst: Installation, count: int) -> None:
    """Add ``count`` revoked certificate rows to the issuing CA straight into the database."""
    now = datetime.now(UTC).replace(tzinfo=None)
    later = now + timedelta(days=365)
    reasons = ["keyCompromise", "superseded", "cessationOfOperation", None]
    rows = (
        (
            "issuing",
            format((0x5A << 152) + i * 104729, "x"),
            "device",
            f"CN=bulk-{i}",
            "[]",
            now - timedelta(days=30),
            later,
            format(i, "064x"),
            "p256",
            b"\x00",
            "revoked",
            now - timedelta(seconds=i % 86400, microseconds=i % 1000),
            reasons[i % 4],
            now - timedelta(days=30),
        )
        for i in range(count)
    )
    columns = (
        "ca_name, serial, profile, subject, sans, not_before, not_after, key_fingerprint, "
        "key_algorithm, der, status, revoked_at, revocation_reason, issued_at"
    )
    url = inst.settings.effective_database_url
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            with conn.cursor().copy(f"COPY certificates ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute("ANALYZE certificates")
        return
    stamp = "%Y-%m-%d %H:%M:%S.%f"  # as the store keeps times in SQLite

    def as_text(row: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(v.strftime(stamp) if isinstance(v, datetime) else v for v in row)

    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    with db:
        db.executemany(
            f"INSERT INTO certificates ({columns}) VALUES ({', '.join('?' * 14)})",
            map(as_text, rows),
        )
        db.execute("ANALYZE")
    db.close()


def postgres_installation(
    work: Path, server_url: str, revocation: dict[str, str]
) -> tuple[Installation, str]:
    """A new installation in a scratch database on that server; the database's name."""
    from sqlalchemy import create_engine, text

    name = f"bench_revocation_{os.getpid()}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    head, _, query = server_url.partition("?")
    url = head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    inst = open_installation(
        _settings(work / "home-pg", database_url=url, http_port=PORT, revocation=revocation),
        create=True,
    )
    inst.initialise(actor="bench")
    return inst, name


def drop_database(server_url: str, name: str) -> None:
    """Drop a scratch database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


_CRL_CHILD = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    from iotpki.services.installation import open_installation
    from iotpki.settings import load_settings
    from iotpki.server import Service
    inst = open_installation(load_settings(Path(sys.argv[1])), lint=False)
    publisher = Service(inst).revocation.publisher
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    crl = publisher.generate("issuing", "full", actor="bench")
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(sys.argv[2]).write_bytes(crl.der)
    print(f"{took:.3f} {peak} {base} {crl.entries} {len(crl.der)} {cpu:.3f}")
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
    start, cpu = time.perf_counter(), time.process_time()
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
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{took:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} {base} {cpu:.3f}")
    """
)


def crl_figures(work: Path, inst: Installation) -> dict[str, str]:
    """Generate the issuing CA's complete CRL in a fresh process: time, peak RSS, size, checks."""
    out_path = work / "big.crl"
    env = {**os.environ, "IOTPKI_PASSPHRASE": PASSPHRASE}
    if inst.settings.database_url:
        env["IOTPKI_DATABASE_URL"] = inst.settings.database_url
    done = subprocess.run(
        [sys.executable, "-c", _CRL_CHILD, str(inst.home), str(out_path)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    took, peak, base, entries, size, cpu = done.stdout.split()
    der = out_path.read_bytes()
    start = time.perf_counter()
    crl = x509.load_der_x509_crl(der)
    issuer = inst.authority.get_ca("issuing").certificate
    valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    listed = sum(1 for _ in crl)
    parse = time.perf_counter() - start
    (work / "issuing.pem").write_bytes(issuer.public_bytes(PEM))
    verify = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(out_path), "-CAfile",
         str(work / "issuing.pem"), "-verify", "-noout"],
        capture_output=True, text=True,
    )  # fmt: skip
    return {
        "entries": f"{int(entries):,}",
        "generate (query + encode + sign + store)": f"{float(took):.2f} s",
        "  its CPU time (this process; not the database server's)": f"{float(cpu):.2f} s",
        "peak RSS of the generating process": f"{int(peak) / 1024:.0f} MiB",
        "RSS before generating": f"{int(base) / 1024:.0f} MiB",
        "CRL size": f"{int(size) / 1e6:.1f} MB",
        "cryptography: parse, signature, entries": f"{valid}, {listed:,} ({parse:.1f} s)",
        "openssl crl -verify": verify.stderr.strip() or f"exit {verify.returncode}",
    }


def builder_figures(count: int) -> dict[str, str]:
    """The same entries through cryptography's CertificateRevocationListBuilder."""
    peer = subprocess.run(
        [sys.executable, "-c", _BUILDER_CHILD, str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    took, peak, _, cpu = peer.stdout.split()
    return {
        "generate (entries + builder + sign)": f"{float(took):.2f} s",
        "  its CPU time": f"{float(cpu):.2f} s",
        "peak RSS of the generating process": f"{int(peak) / 1024:.0f} MiB",
    }


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
            crl = service.revocation.cached_crl("issuing", kind)
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


def _table(title: str, rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> None:
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
    parser.add_argument("--skip-crl", action="store_true", help="OCSP rates only")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("IOTPKI_TEST_DATABASE_URL"),
        help="a PostgreSQL server URL to measure on too (a scratch database is made and dropped)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        settings = _settings(
            home,
            http_port=PORT,
            revocation=REVOCATION,
        )
        inst = open_installation(settings, create=True)
        inst.initialise(actor="bench")
        print(f"# revocation benchmark, {os.cpu_count()} cores, python {sys.version.split()[0]}")
        if not args.skip_ocsp:
            rates = ocsp_rates(work, inst, args.requests)
            _table(
                f"OCSP, server on core {SERVER_CORE}, load on core {LOAD_CORE}: "
                f"ab -k -c 32 -n {args.requests}, wrk -t1 -c32 -d10s",
                [
                    (
                        n,
                        m,
                        load,
                        f"{r:,.0f}",
                        f"{per * 1e6:.0f}",
                        f"{1 / per:,.0f}" if per else "-",
                        note,
                    )
                    for n, m, load, r, per, note in rates
                ],
                (
                    "responder",
                    "method",
                    "load",
                    "responses/s",
                    "server CPU us/resp",
                    "per CPU-s",
                    "notes",
                ),
            )
        if args.skip_crl:
            inst.close()
            return
        backends: list[tuple[str, Installation]] = [("SQLite", inst)]
        scratch = None
        if args.postgres:
            pg_inst, scratch = postgres_installation(work, args.postgres, REVOCATION)
            backends.append(("PostgreSQL", pg_inst))
        try:
            columns: dict[str, dict[str, str]] = {}
            for label, installation in backends:
                start = time.perf_counter()
                fill_revoked(installation, args.revoked)
                print(
                    f"\n(filled {args.revoked:,} revoked rows into {label} in "
                    f"{time.perf_counter() - start:.0f} s)"
                )
                columns[f"iotpki, {label}"] = crl_figures(work, installation)
            columns["cryptography builder"] = builder_figures(args.revoked)
            names = list(dict.fromkeys(k for figures in columns.values() for k in figures))
            _table(
                f"CRL with {args.revoked:,} revoked entries (fresh process each)",
                [(n, *(figures.get(n, "") for figures in columns.values())) for n in names],
                ("figure", *columns),
            )
            for label, installation in backends:
                _table(
                    f"Revocation with {args.revoked:,} already revoked "
                    f"({args.samples} calls, {label})",
                    revocation_latency(installation, args.samples),
                    ("figure", "value"),
                )
        finally:
            for _, installation in backends:
                installation.close()
            if scratch is not None:
                drop_database(args.postgres, scratch)
        print(f"\nmax RSS of the benchmark process: {_maxrss_mib():.0f} MiB")


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
