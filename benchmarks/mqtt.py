"""Provisionings per second over MQTT beside EST enrollments per second, in one run on one
server, CA and store; the broker's CPU per provisioning.

Run on demand: ``.venv/bin/python benchmarks/mqtt.py [--requests 300]``. Needs ``taskset`` and
``mosquitto``. ``iotpki serve --workers 1`` (SQLite, ``[mqtt] broker_url`` set, so its
provisioning service runs in the same process) and mosquitto (on the configuration
``iotpki broker config`` writes) share CPU 0; the load generator runs on CPU 1.

- EST ``simpleenroll``: HTTP Basic with a fresh one-time secret, over HTTPS keep-alive
  (``benchmarks/est.py``'s client);
- MQTT ``enroll``: a signed request (JWS, P-256) with a batch's claim certificate, each client
  one MQTT 5 connection that sends its next request when the answer to the last arrives.

Each runs at 1 and 8 clients; the batches alternate. ``openssl speed`` gives the P-256 signing
ceiling of this machine in the same run.
"""

from __future__ import annotations

import argparse
import getpass
import os
import queue
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from est import PYTHON, est_requests, free_port, http_request, iotpki_server, load
from iotpki.protocols.mqtt.transport import no_delay

CLIENTS = (1, 8)
PASSPHRASE = "bench"


def prepare(home: Path, work: Path, port: int) -> Path:
    """A claim CA and batch, the broker files, and ``[mqtt]`` in the server's settings."""
    from iotpki.core.models import BootstrapKind, KeyAlgorithm
    from iotpki.server import enrollment
    from iotpki.services.broker import BrokerSettings, write_config
    from iotpki.services.installation import open_installation
    from iotpki.settings import load_settings

    os.environ["IOTPKI_PASSPHRASE"] = PASSPHRASE
    inst = open_installation(load_settings(home), lint=False)
    from datetime import timedelta

    inst.authority.create_issuing(
        "claims", parent="root", common_name="Claims CA", algorithm=KeyAlgorithm.P256,
        lifetime=timedelta(days=365), backend="file", actor="bench",
    )  # fmt: skip
    enrollment(inst).add_bootstrap_ca(
        "bench", inst.authority.get_ca("claims").certificate, enroll_policy="any",
        kind=BootstrapKind.CLAIM, device_pattern="mqtt[0-9]+-[0-9]+", actor="bench",
    )  # fmt: skip
    broker = work / "broker"
    write_config(inst, BrokerSettings(directory=broker, port=port, user=getpass.getuser()))
    batch = work / "batch"
    subprocess.run(
        [PYTHON, "-c", "from iotpki.cli.main import run; run()", "--home", str(home),
         "mqtt", "claim", "issue", "bench-batch", "--ca", "claims", "--out", str(batch)],
        check=True, capture_output=True, env={**os.environ, "IOTPKI_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    inst.close()
    with (home / "iotpki.toml").open("a") as settings:
        settings.write(
            f'\n[mqtt]\nbroker_url = "mqtts://127.0.0.1:{port}"\nclient_dir = "{broker}"\n'
            "requests_per_minute = 0\n"
        )
    return batch


def mqtt_requests(batch: Path, count: int, prefix: str) -> list[bytes]:
    """``count`` signed enroll requests, each for its own device and key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from iotpki.protocols.mqtt.messages import sign_request

    chain = x509.load_pem_x509_certificates((batch / "claim.pem").read_bytes())
    claim_key = serialization.load_pem_private_key((batch / "claim.key").read_bytes(), None)
    out = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix}-{i}")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        out.append(sign_request(claim_key, chain, f"{prefix}-{i}", csr))
    return out


def mqtt_load(
    port: int, broker: Path, batch: Path, requests: list[bytes], clients: int
) -> tuple[float, int]:
    """Successful provisionings per second over ``clients`` MQTT connections, and failures."""
    work = queue.SimpleQueue[bytes]()
    for request in requests:
        work.put(request)
    failures = [0]
    ready = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        context = ssl.create_default_context(cafile=str(broker / "ca.pem"))
        context.load_cert_chain(batch / "claim.pem", batch / "claim.key")
        answers: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"c{n}", protocol=paho.MQTTv5)
        mqtt.tls_set_context(context)
        mqtt.on_socket_open = no_delay
        mqtt.on_message = lambda _c, _u, m: answers.put(bytes(m.payload))
        mqtt.connect("127.0.0.1", port)
        mqtt.loop_start()
        mqtt.subscribe(f"iotpki/reply/bench-batch/c{n}/#", qos=1)
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = f"iotpki/reply/bench-batch/c{n}/r"
        time.sleep(0.5)  # the subscription is in place before the clock starts
        ready.wait()
        while True:
            try:
                request = work.get_nowait()
            except queue.Empty:
                break
            mqtt.publish(f"iotpki/enroll/bench-batch/c{n}", request, qos=1, properties=properties)
            try:
                if b'"issued"' not in answers.get(timeout=60):
                    failures[0] += 1
            except queue.Empty:
                failures[0] += 1
        mqtt.disconnect()
        mqtt.loop_stop()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return (len(requests) - failures[0]) / seconds, failures[0]


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def openssl_p256_signs() -> float:
    """P-256 signatures per second on one core (``openssl speed``)."""
    done = subprocess.run(
        ["taskset", "-c", "0", "openssl", "speed", "-seconds", "2", "ecdsap256"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if "nistp256" in x and "ecdsa" in x)
    return float(line.split()[-2])


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
            env={**os.environ, "IOTPKI_PASSPHRASE": PASSPHRASE}, check=True, capture_output=True,
        )  # fmt: skip
        port = free_port()
        batch = prepare(home, work, port)
        print(f"making {args.requests} EST and MQTT requests per level ...", flush=True)
        est = {n: est_requests(home, args.requests, f"est{n}") for n in CLIENTS}
        mqtt = {n: mqtt_requests(batch, args.requests, f"mqtt{n}") for n in CLIENTS}
        broker_dir = work / "broker"
        with (broker_dir / "mosquitto.log").open("ab") as log:
            broker = subprocess.Popen(
                ["taskset", "-c", "0", "mosquitto", "-c", str(broker_dir / "mosquitto.conf")],
                stdout=log, stderr=log,
            )  # fmt: skip
        results: dict[tuple[str, int], tuple[float, int]] = {}
        broker_cpu: dict[int, float] = {}
        try:
            with iotpki_server(home) as https_port:
                log_file = home / "serve.log"
                deadline = time.monotonic() + 120
                while "connected to the broker" not in log_file.read_text(errors="replace"):
                    if time.monotonic() > deadline:
                        raise SystemExit("the provisioning service did not connect")
                    time.sleep(0.2)
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # measuring, not trusting
                load(https_port, [http_request("GET", "/healthz")] * 200, 4, context)
                for clients in CLIENTS:
                    print(f"{clients} client(s) ...", flush=True)
                    results[("EST simpleenroll", clients)] = load(
                        https_port, est[clients], clients, context
                    )
                    before = cpu_seconds(broker.pid)
                    results[("MQTT enroll", clients)] = mqtt_load(
                        port, broker_dir, batch, mqtt[clients], clients
                    )
                    broker_cpu[clients] = cpu_seconds(broker.pid) - before
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(timeout=30)
        ceiling = openssl_p256_signs()
    print()
    print(f"{'protocol':<18} {'clients':>7} {'per second':>11} {'failed':>7}")
    for (name, clients), (rate, failed) in results.items():
        print(f"{name:<18} {clients:>7} {rate:>11.1f} {failed:>7}")
    print()
    for clients, seconds in broker_cpu.items():
        per = seconds / args.requests * 1000
        print(f"broker CPU at {clients} client(s): {seconds:.2f} s, {per:.1f} ms per provisioning")
    print(f"openssl speed ecdsap256 (CPU 0): {ceiling:.0f} signatures per second")


if __name__ == "__main__":
    main()
