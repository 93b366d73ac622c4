"""CMP ``ir`` per second beside EST ``simpleenroll``, in one run on one server, CA and store.

Run on demand: ``.venv/bin/python benchmarks/cmp.py [--requests 300]``. Needs ``taskset`` and
``openssl``. The server (``iotpki serve --workers 1``, SQLite) is pinned to CPU 0, the load
generator to CPU 1, as in ``benchmarks/est.py``, whose client this reuses. Both protocols go
over the HTTPS listener with keep-alive:

- EST ``simpleenroll``: HTTP Basic with a fresh one-time secret, base64 PKCS#10 in;
- CMP ``ir`` with implicit confirmation (one round trip, as EST), MAC-protected
  (PasswordBasedMac, 500 iterations) with a fresh one-time secret; the requests are made
  beforehand by ``openssl cmp -reqout`` and sent as they are.

Each protocol runs at 1 and 8 clients; the batches alternate so that drift falls on both.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import tempfile
from pathlib import Path

from est import PYTHON, est_requests, http_request, iotpki_server, load

CLIENTS = (1, 8)


def cmp_requests(home: Path, work: Path, count: int, prefix: str) -> list[bytes]:
    """``count`` MAC-protected ir requests, each for its own device and one-time secret."""
    from iotpki.server import enrollment
    from iotpki.services.installation import open_installation
    from iotpki.settings import load_settings

    os.environ["IOTPKI_PASSPHRASE"] = "bench"
    inst = open_installation(load_settings(home), lint=False)
    enroll = enrollment(inst)
    requests = []
    for i in range(count):
        device = f"{prefix}-{i}"
        secret, _ = enroll.create_secret(device, actor="bench")
        key, out = work / f"{device}.key", work / f"{device}.der"
        subprocess.run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
            check=True,
        )
        subprocess.run(
            ["openssl", "cmp", "-cmd", "ir", "-server", "127.0.0.1:1", "-ref", device,
             "-secret", f"pass:{secret}", "-recipient", "/CN=iotpki Issuing CA",
             "-newkey", str(key), "-subject", f"/CN={device}", "-implicit_confirm",
             "-certout", str(work / "unused.pem"), "-reqout", str(out)],
            capture_output=True,
        )  # fmt: skip
        body = out.read_bytes()
        requests.append(
            http_request("POST", "/.well-known/cmp", body, {"Content-Type": "application/pkixcmp"})
        )
    inst.close()
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per protocol and level")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "iotpki"
        subprocess.run(
            [PYTHON, "-c", "from iotpki.cli.main import run; run()", "--home", str(home), "init"],
            env={**os.environ, "IOTPKI_PASSPHRASE": "bench"},
            check=True,
            capture_output=True,
        )
        print(f"making {args.requests} EST and CMP requests per level ...", flush=True)
        est = {n: est_requests(home, args.requests, f"est{n}") for n in CLIENTS}
        cmp = {n: cmp_requests(home, work, args.requests, f"cmp{n}") for n in CLIENTS}
        results: dict[tuple[str, int], tuple[float, int]] = {}
        with iotpki_server(home) as port:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # measuring, not trusting
            load(port, [http_request("GET", "/healthz")] * 200, 4, context)  # warm up
            for clients in CLIENTS:
                print(f"{clients} client(s) ...", flush=True)
                results[("EST simpleenroll", clients)] = load(port, est[clients], clients, context)
                results[("CMP ir", clients)] = load(port, cmp[clients], clients, context)
    print()
    print(f"{'protocol':<18} {'clients':>7} {'per second':>11} {'failed':>7}")
    for (name, clients), (rate, failed) in results.items():
        print(f"{name:<18} {clients:>7} {rate:>11.1f} {failed:>7}")


if __name__ == "__main__":
    main()
