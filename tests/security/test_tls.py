"""TLS for the broker and the console web, with the certificate the console generates.

- `python -m console tls` makes a CA and a server certificate in the instance (keys 0600),
  adds [tls] to config.toml and the TLS listener to the broker's config; run again, it
  renews the server certificate and keeps the CA;
- the broker's TLS port accepts a client that verifies the CA and the host name, and
  refuses a plain connection, a client trusting another CA, and a wrong host name;
- a real bridge, built from the config file the console API gives, connects over TLS,
  downloads the audio over HTTPS and plays a broadcast;
- `python -m console serve` answers HTTPS to a client that verifies the CA, and its session
  cookie is Secure.
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from cryptography import x509
from flask import Flask
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion
from werkzeug.serving import make_server

from console.broker import BrokerError, BrokerProcess, BrokerSettings, free_port, write_config
from console.settings import Settings, SettingsError, TlsConfig, load_settings
from console.tls import TlsError, TlsFiles, certificate_names, issue_server_certificate
from firmware_bridge import build_bridge, load_bridge_config
from firmware_bridge.config import BridgeConfigError
from tests.conftest import Broker, wait_for
from tests.console.conftest import make_settings, token_for
from tests.console.test_end_to_end import tone_wav

ROOT = Path(__file__).resolve().parents[2]
# The broker and web certificate names one host name and one address, not "localhost".
NAMES = ["loa.test", "127.0.0.1"]


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    files = TlsFiles(tmp_path / "tls")
    issue_server_certificate(files, NAMES)
    return files


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Broker]:
    """The project's broker with its TLS listener (and the plain one on loopback)."""
    settings = BrokerSettings(
        data_dir=tmp_path / "broker",
        admin_username="broker-admin",
        admin_password=secrets.token_urlsafe(16),
        port=free_port(),
        tls_port=free_port(),
        tls_host="127.0.0.1",
        tls_cert=tls_files.cert,
        tls_key=tls_files.key,
    )
    process = BrokerProcess(settings)
    process.start()
    broker = Broker(process)
    with broker.admin() as admin:
        admin.provision_console(broker.console_username, broker.console_password)
    yield broker
    process.stop()


def tls_port(broker: Broker) -> int:
    return broker.process.settings.tls_port


def connect(
    broker: Broker, context: ssl.SSLContext, username: str | None
) -> tuple[mqtt.Client, Any]:
    """A paho client on the TLS port; returns it and the broker's answer to CONNECT."""
    outcome: dict[str, Any] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if username is not None:
        client.username_pw_set(username, broker.console_password)
    client.tls_set_context(context)
    client.on_connect = lambda _c, _u, _f, rc, _p: outcome.setdefault("rc", rc)
    client.connect("127.0.0.1", tls_port(broker), keepalive=10)
    client.loop_start()
    return client, wait_for(lambda: outcome.get("rc"), 15, "the broker's CONNACK")


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()
    client._reset_sockets(sockpair_only=True)


def trusting(files: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=files.ca_cert)


def handshake(port: int, context: ssl.SSLContext, name: str) -> ssl.SSLError | None:
    """A TLS handshake with the broker as a client checking `name`: None, or why it failed."""
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=name):
                return None
        except ssl.SSLError as exc:
            return exc


def test_the_broker_speaks_tls_to_whoever_trusts_the_ca(
    tls_broker: Broker, tls_files: TlsFiles, tmp_path: Path
) -> None:
    client, rc = connect(tls_broker, trusting(tls_files), tls_broker.console_username)
    try:
        assert not rc.is_failure, rc
        assert isinstance(client.socket(), ssl.SSLSocket)
        got = threading.Event()
        client.on_message = lambda *_: got.set()
        client.subscribe("loa/v1/dev/tls-probe/ack", qos=1)
        wait_for(lambda: client.publish("loa/v1/dev/tls-probe/ack", b"x", qos=1) and got.wait(1),
                 15, "a message through the TLS listener")  # fmt: skip
    finally:
        close(client)

    port = tls_port(tls_broker)
    assert handshake(port, trusting(tls_files), "loa.test") is None  # its host name
    other = TlsFiles(tmp_path / "another-ca")
    issue_server_certificate(other, NAMES)
    refused = handshake(port, trusting(other), "loa.test")
    assert isinstance(refused, ssl.SSLCertVerificationError), refused
    assert "self-signed" in str(refused) or "unable to get local issuer" in str(refused)
    # The right CA but a name the certificate does not hold: refused too.
    wrong_name = handshake(port, trusting(tls_files), "localhost")
    assert isinstance(wrong_name, ssl.SSLCertVerificationError), wrong_name
    assert "localhost" in str(wrong_name)


def test_the_tls_port_refuses_plain_mqtt_and_anonymous_clients(
    tls_broker: Broker, tls_files: TlsFiles
) -> None:
    # An MQTT 3.1.1 CONNECT in clear: the broker waits for a TLS handshake, never answers.
    connect_packet = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0])
    with socket.create_connection(("127.0.0.1", tls_port(tls_broker)), 5) as sock:
        sock.settimeout(5)
        sock.sendall(connect_packet)
        try:
            answer = sock.recv(4)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert not answer.startswith(b"\x20")  # no CONNACK
    anonymous, rc = connect(tls_broker, trusting(tls_files), None)
    close(anonymous)
    assert rc.is_failure  # TLS is no way around the accounts


# --- a real bridge over TLS, its audio over HTTPS ---------------------------------------------


@pytest.fixture
def settings(
    tmp_path: Path, tls_broker: Broker, tls_files: TlsFiles, web_port: int, database_url: str
) -> Settings:
    """The console of a TLS installation: devices on the TLS port, the web on HTTPS."""
    return make_settings(
        tmp_path,
        tls_broker,
        public_base_url=f"https://127.0.0.1:{web_port}",
        database_url=database_url,
        tls=TlsConfig(
            ca_file=tls_files.ca_cert,
            cert_file=tls_files.cert,
            key_file=tls_files.key,
            broker_port=tls_port(tls_broker),
            broker_host="127.0.0.1",
            web=True,
        ),
    )


@pytest.fixture
def https_server(app: Flask, web_port: int, tls_files: TlsFiles) -> Iterator[str]:
    server = make_server(
        "127.0.0.1", web_port, app, threaded=True,
        ssl_context=(str(tls_files.cert), str(tls_files.key)),
    )  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{web_port}"
    server.shutdown()
    thread.join(5)


def test_a_bridge_from_the_console_file_connects_over_tls_and_plays(
    client: FlaskClient,
    settings: Settings,
    tls_files: TlsFiles,
    https_server: str,
    worker: Any,
    tmp_path: Path,
) -> None:
    admin = token_for(client, "admin")
    for zone in ({"id": "xa-tls", "name": "Xã TLS", "kind": "commune"},
                 {"id": "thon-tls", "name": "Thôn TLS", "kind": "hamlet", "parent_id": "xa-tls"}):  # fmt: skip
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    body = {"id": "loa-tls", "name": "Loa TLS", "profile": "speaker-node", "zone_id": "thon-tls"}
    resp = client.post("/api/v1/devices", json=body, headers=admin)
    assert resp.status_code == 201, resp.get_json()
    text = resp.get_json()["bridge_config"]
    written = tomllib.loads(text)["mqtt"]
    assert settings.tls is not None
    assert written["tls"] is True and written["port"] == settings.tls.broker_port
    assert written["ca_cert"].strip() == tls_files.ca_cert.read_text().strip()
    assert "PRIVATE KEY" not in text
    path = tmp_path / "bridge.toml"
    path.write_text(text.replace('"/var/lib/tieng-loa', f'"{tmp_path / "pi"}'))
    bridge = build_bridge(load_bridge_config(path), simulate=True)
    bridge.start()
    try:
        viewer = token_for(client, "viewer")
        wait_for(lambda: client.get("/api/v1/devices/loa-tls", headers=viewer).get_json()["online"],
                 30, "the device online over TLS")  # fmt: skip
        assert isinstance(bridge.link.tcp_socket(), ssl.SSLSocket)
        operator = token_for(client, "operator")
        wav = tone_wav(tmp_path / "tls.wav", seconds=1.0)
        up = client.post("/api/v1/audio", headers=operator, content_type="multipart/form-data",
                         data={"file": (io.BytesIO(wav.read_bytes()), "tls.wav")})  # fmt: skip
        assert up.status_code == 201, up.get_json()
        sent = client.post("/api/v1/broadcasts", headers=operator,
                           json={"audio_sha256": up.get_json()["sha256"], "zone_ids": ["thon-tls"]})  # fmt: skip
        assert sent.status_code == 201, sent.get_json()
        url = f"/api/v1/broadcasts/{sent.get_json()['id']}"
        wait_for(lambda: client.get(url, headers=viewer).get_json()["summary"] == {"finished": 1},
                 60, "the broadcast played over TLS and HTTPS")  # fmt: skip
    finally:
        bridge.stop()
    # The audio came over HTTPS from the console, trusted through the same CA.
    assert (tmp_path / "pi" / "broker-ca.pem").read_text() == written["ca_cert"]


def test_bad_tls_settings_in_a_bridge_file_are_named(tmp_path: Path, tls_files: TlsFiles) -> None:
    def load(mqtt_lines: str) -> str:
        path = tmp_path / "bridge.toml"
        path.write_text(
            'device_id = "loa-x"\nprofile = "speaker-node"\nstate_dir = "/var/lib/tieng-loa"\n'
            f'[mqtt]\nhost = "loa.test"\nusername = "loa-x"\npassword = "p"\n{mqtt_lines}\n'
            '[cache]\ndir = "/var/lib/tieng-loa/cache"\n'
        )
        with pytest.raises(BridgeConfigError) as err:
            load_bridge_config(path)
        return str(err.value)

    pem = tls_files.ca_cert.read_text()
    assert "add tls = true" in load(f"ca_cert = '''{pem}'''")
    assert "not both" in load(
        f"tls = true\nca_cert = '''{pem}'''\nca_file = \"{tls_files.ca_cert}\""
    )
    assert "cannot read the CA certificate" in load("tls = true\nca_cert = '''not a certificate'''")
    assert "cannot read the CA certificate" in load(f'tls = true\nca_file = "{tmp_path}/none.pem"')
    assert "did you mean 'ca_cert'" in load("tls = true\nca_certs = 'x'")


# --- the command, and the web over HTTPS ------------------------------------------------------


def console(instance: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console", "--instance", str(instance), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "LOA_NEW_PASSWORD": "admin-pass-for-gunicorn"},
    )  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_tls_command_makes_renews_and_the_web_serves_https(tmp_path: Path) -> None:
    instance = tmp_path / "prod"
    port = free_port()
    made = console(instance, "init", "--web-port", str(port), "--broker-port", str(free_port()))
    assert made.returncode == 0, made.stderr
    bad = console(instance, "tls", "--name", "not a name!")
    assert bad.returncode == 2 and "not a host name" in bad.stderr
    assert not (instance / "tls" / "server.crt").exists()

    first = console(instance, "tls", "--name", "loa.xa-an-binh.vn", "--name", "10.0.0.7",
                    "--broker-port", str(free_port()), "--web")  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "(new)" in first.stdout and "[tls] added" in first.stdout
    files = TlsFiles(instance / "tls")
    assert (mode(files.ca_key), mode(files.key), mode(files.directory)) == (0o600, 0o600, 0o700)
    assert certificate_names(files.cert) == ["loa.xa-an-binh.vn", "10.0.0.7", "localhost",
                                             "127.0.0.1"]  # fmt: skip
    settings = load_settings(instance)
    assert settings.tls is not None and settings.tls.web and settings.tls.cert_file == files.cert
    conf = (settings.broker.data_dir / "mosquitto.conf").read_text()
    assert f"listener {settings.tls.broker_port}\n" in conf and f"keyfile {files.key}" in conf
    assert "PRIVATE KEY" not in first.stdout + first.stderr

    ca_before, cert_before = files.ca_cert.read_bytes(), files.cert.read_bytes()
    again = console(instance, "tls", "--name", "loa.xa-an-binh.vn")  # renewal
    assert again.returncode == 0, again.stderr
    assert "(kept)" in again.stdout and "[tls] added" not in again.stdout
    assert files.ca_cert.read_bytes() == ca_before and files.cert.read_bytes() != cert_before
    renewed = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_before)
    renewed.verify_directly_issued_by(ca)
    assert load_settings(instance) == settings  # config.toml unchanged

    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console", "--instance", str(instance), "serve",
             "--workers", "1", "--threads", "4"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"https://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                return requests.get(f"{base}/login", verify=files.ca_cert, timeout=5).ok
            except requests.ConnectionError:
                return proc.poll() is not None

        wait_for(answers, 60, "the console over HTTPS")
        assert proc.poll() is None, log.read_text()
        browser = requests.Session()
        ca = str(files.ca_cert)  # per request: a session's `verify` loses to $REQUESTS_CA_BUNDLE
        page = browser.get(f"{base}/login", verify=ca, timeout=10)
        assert page.status_code == 200 and "csrf_token" in page.text
        token = page.text.split('name="csrf_token"')[1].split('value="')[1].split('"')[0]
        resp = browser.post(
            f"{base}/login",
            data={"username": "admin", "password": made.stdout.split("admin / ")[1].split()[0],
                  "csrf_token": token},
            headers={"Referer": f"{base}/login"},
            verify=ca,
            allow_redirects=False,
            timeout=10,
        )  # fmt: skip
        assert resp.status_code == 302, resp.text[:300]
        cookie = next(c for c in browser.cookies if c.name == "session")
        assert cookie.secure
        assert "secure" in resp.headers["Set-Cookie"].lower()
        account = browser.get(f"{base}/account", verify=ca, timeout=10, allow_redirects=False)
        assert account.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{base}/login", timeout=10)  # the system does not trust this CA
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/login", timeout=10)  # no plain HTTP
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_bad_names_and_settings_are_refused_clearly(tmp_path: Path, tls_files: TlsFiles) -> None:
    with pytest.raises(TlsError, match="not a host name"):
        issue_server_certificate(TlsFiles(tmp_path / "x"), ["<script>"])
    with pytest.raises(TlsError, match="at least one"):
        issue_server_certificate(TlsFiles(tmp_path / "y"), [" ", ""])
    tls_files.ca_key.unlink()
    with pytest.raises(TlsError, match="half a CA"):
        issue_server_certificate(tls_files, NAMES)
    instance = tmp_path / "inst"
    instance.mkdir()
    (instance / "config.toml").write_text(
        'secret_key = "k"\ndatabase_url = "sqlite://"\nmedia_dir = "m"\n'
        '[broker]\nadmin_password = "a"\nconsole_password = "c"\ndata_dir = "b"\n'
        '[tls]\nca_file = "a"\ncert_file = "b"\nkey_file = "c"\nbroker_prot = 8883\n'
    )
    with pytest.raises(SettingsError, match="did you mean 'broker_port'"):
        load_settings(instance)


def test_the_broker_config_has_the_tls_listener_and_warns_of_plain_mqtt_on_a_network(
    tmp_path: Path, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    base = BrokerSettings(
        data_dir=tmp_path / "b", admin_username="broker-admin", admin_password=secrets.token_urlsafe(16),
        tls_port=8883, tls_cert=tls_files.cert, tls_key=tls_files.key,
    )  # fmt: skip
    write_config(base)
    conf = base.config_path.read_text()
    assert "listener 8883\n" in conf and "tls_version tlsv1.2" in conf
    assert "warning" not in caplog.text.lower()
    write_config(replace(base, host="0.0.0.0"))
    assert "plain MQTT listens on 0.0.0.0" in caplog.text
    with pytest.raises(BrokerError, match="python -m console tls"):
        write_config(replace(base, tls_key=tmp_path / "missing.key"))
