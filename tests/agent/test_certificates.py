"""Certificate files of a load balancer (upload / md5 / delete, validation, a TLS listener that
serves them) and rotation of the agent's own server certificate."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness.amphora_api.client import AmphoraAPIError
from tests.support.api_errors import expect_error

NAME = "www.example.com.pem"


def encrypted_key_bundle(pki) -> bytes:
    issued = pki.ca.issue("www.example.com")
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"))
    return issued.cert_pem + encrypted


def crl_pem() -> bytes:
    """A (self-issued) certificate revocation list: the agent only checks that it parses."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "crl issuer")]))
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def served_certificate(port: int, ca_path, client_pem) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(ca_path))
    context.check_hostname = False
    if client_pem:
        context.load_cert_chain(str(client_pem))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_upload_md5_delete(agent_factory, pki):
    agent = agent_factory()
    client = agent.client
    lb_id = str(uuid.uuid4())  # certificates come before the config in Octavia's flow
    issued = pki.ca.issue("www.example.com", key_kind="rsa")
    # Octavia's order: certificate, key, intermediates.
    pem = issued.cert_pem + issued.key_pem + pki.ca.cert_pem
    md5 = hashlib.md5(pem).hexdigest()

    assert client.upload_cert(lb_id, NAME, pem) == md5
    stored = agent.cert_dir / lb_id / NAME
    assert stored.read_bytes() == pem
    assert stored.stat().st_mode & 0o777 == 0o600
    response = client.request("GET", f"/1.0/loadbalancer/{lb_id}/certificates/{NAME}")
    assert response.json() == {"md5sum": md5}
    assert response.headers["ETag"] == md5
    assert b"BEGIN" not in response.content  # never the PEM itself
    assert client.get_cert_md5(lb_id, NAME) == md5

    assert client.delete_cert(lb_id, NAME) == {"message": "OK"}
    assert not stored.exists()
    assert client.delete_cert(lb_id, NAME) == {"message": "OK"}  # already gone: still OK
    expect_error(404, "Certificate Not Found", client.get_cert_md5, lb_id, NAME)


def test_accepts_every_kind_of_file_the_driver_uploads(agent_factory, pki):
    agent = agent_factory()
    client = agent.client
    lb_id = str(uuid.uuid4())
    issued = pki.ca.issue("www.example.com")
    files = {
        "key-first.pem": issued.key_pem + issued.cert_pem,  # server.pem layout
        "ca.pem": pki.ca.cert_pem,                          # client CA for a listener
        "crl.pem": crl_pem(),                               # its revocation list
        f"{uuid.uuid4()}.pem": (f"{agent.cert_dir}/{lb_id}/key-first.pem\n"  # crt-list
                                f"{agent.cert_dir}/{lb_id}/other.pem\n").encode(),
    }
    for name, data in files.items():
        assert client.upload_cert(lb_id, name, data) == hashlib.md5(data).hexdigest()


# Each case: what is uploaded instead of a good file, and the API's answer.
REJECTED_LB_FILES = {
    "empty": (lambda pki: b"", "No certificate found"),
    "text": (lambda pki: b"hello world\n", "No certificate found"),
    "key-only": (lambda pki: pki.ca.issue("x").key_pem, "No certificate found"),
    "corrupt-cert": (lambda pki: pki.ca.cert_pem.replace(b"M", b"A", 40),
                     "No certificate found"),
    "corrupt-key": (lambda pki: pki.ca.issue("x").cert_pem + b"-----BEGIN PRIVATE KEY-----\n"
                    b"AAAA\n-----END PRIVATE KEY-----\n", "No RSA key found"),
    "encrypted-key": (encrypted_key_bundle, "No RSA key found"),
    "mismatch": (lambda pki: pki.ca.issue("x").cert_pem + pki.ca.issue("y").key_pem,
                 "Certificate and key do not match"),
}


def test_rejected_certificates_leave_the_old_file(agent_factory, pki):
    agent = agent_factory()
    lb_id = str(uuid.uuid4())
    good = pki.ca.issue("www.example.com").bundle
    agent.client.upload_cert(lb_id, NAME, good)
    for case, (body, message) in REJECTED_LB_FILES.items():
        with pytest.raises(AmphoraAPIError) as caught:
            agent.client.upload_cert(lb_id, NAME, body(pki))
        assert (caught.value.status, caught.value.message) == (400, message), case
        assert (agent.cert_dir / lb_id / NAME).read_bytes() == good, case
        assert [p.name for p in (agent.cert_dir / lb_id).iterdir()] == [NAME], case


def test_filename_format(agent_factory, pki):
    agent = agent_factory()
    client = agent.client
    lb_id = str(uuid.uuid4())
    for name in ("cert.txt", ".hidden.pem", "two words.pem", "pem", "a:b.pem", "%2e%2e.pem"):
        for call, args in ((client.upload_cert, (pki.ca.issue("x").bundle,)),
                           (client.get_cert_md5, ()), (client.delete_cert, ())):
            with pytest.raises(AmphoraAPIError) as caught:
                call(lb_id, name, *args)
            assert (caught.value.status, caught.value.message) == (
                400, "Filename has wrong format"), (name, call.__name__)
    assert not agent.cert_dir.exists() or not any(agent.cert_dir.iterdir())


def test_path_separators_and_bad_ids_never_reach_the_file_system(agent_factory, pki):
    agent = agent_factory()
    client = agent.client
    bundle = pki.ca.issue("x").bundle
    for lb_id, name in [("..", "x.pem"), (str(uuid.uuid4()), "..%2F..%2Fx.pem"),
                        (str(uuid.uuid4()), "a%2Fb.pem"), ("not-a-uuid", "x.pem")]:
        with pytest.raises(AmphoraAPIError) as caught:
            client.upload_cert(lb_id, name, bundle)
        assert caught.value.status in (400, 404)
    assert not agent.cert_dir.exists() or not any(agent.cert_dir.rglob("*"))
    assert not list(agent.directory.rglob("x.pem"))


def test_oversized_certificate_is_413(agent_factory, pki):
    agent = agent_factory(max_request_body_bytes=2048)
    big = pki.ca.issue("x").bundle + b"#" * 4096
    expect_error(413, "Request Entity Too Large", agent.client.upload_cert,
                 str(uuid.uuid4()), NAME, big)
    expect_error(413, "Request Entity Too Large", agent.client.rotate_server_cert, big)


def test_terminated_https_listener_serves_uploaded_certificate(agent_factory, lb_config,
                                                               http_backend, pki):
    agent = agent_factory()
    client = agent.client
    lb = lb_config(agent, http_backend.port)
    issued = pki.ca.issue("www.example.com", dns_names=("www.example.com",))
    client.upload_cert(lb.lb_id, NAME, issued.cert_pem + issued.key_pem)
    crt_list_name = f"{lb.listener_id}.pem"
    client.upload_cert(lb.lb_id, crt_list_name,
                       f"{agent.cert_dir}/{lb.lb_id}/{NAME}\n".encode())
    config = lb.text.replace(
        f"    bind 127.0.0.1:{lb.port}\n",
        f"    bind 127.0.0.1:{lb.port} ssl crt-list {agent.cert_dir}/{lb.lb_id}/{crt_list_name}\n")
    client.upload_config(lb.lb_id, config)
    client.start(lb.lb_id)

    assert client.get_listeners() == [
        {"status": "ACTIVE", "uuid": lb.listener_id, "type": "TERMINATED_HTTPS"}]
    served = served_certificate(lb.port, pki.ca_path, None)
    assert served.public_bytes(serialization.Encoding.PEM) == issued.cert_pem


def test_server_certificate_rotation(agent_factory, pki):
    agent = agent_factory()
    old_served = served_certificate(agent.port, pki.ca_path, pki.driver.client_pem)
    new = pki.ca.issue(agent.amphora_id)

    assert agent.client.rotate_server_cert(new.bundle) == {"message": "OK"}
    assert agent.credentials.server_pem.read_bytes() == new.bundle
    served = served_certificate(agent.port, pki.ca_path, pki.driver.client_pem)
    assert served.public_bytes(serialization.Encoding.PEM) == new.cert_pem
    assert served != old_served
    assert agent.client.get_info()["uuid"] == agent.amphora_id  # the client accepts it
    # And after a restart the agent serves it from its file.
    agent.restart()
    served = served_certificate(agent.port, pki.ca_path, pki.driver.client_pem)
    assert served.public_bytes(serialization.Encoding.PEM) == new.cert_pem


REJECTED_SERVER_CERTS = {
    "no-key": (lambda pki, amp: pki.ca.cert_pem, "No RSA key found"),
    "no-cert": (lambda pki, amp: pki.ca.issue(amp).key_pem, "No certificate found"),
    "mismatch": (lambda pki, amp: pki.ca.issue(amp).cert_pem + pki.ca.issue(amp).key_pem,
                 "Certificate and key do not match"),
}


def test_rejected_rotation_keeps_the_current_certificate(agent_factory, pki):
    agent = agent_factory()
    before = agent.credentials.server_pem.read_bytes()
    for case, (body, message) in REJECTED_SERVER_CERTS.items():
        with pytest.raises(AmphoraAPIError) as caught:
            agent.client.rotate_server_cert(body(pki, agent.amphora_id))
        assert (caught.value.status, caught.value.message) == (400, message), case
        assert agent.credentials.server_pem.read_bytes() == before, case
    assert agent.client.get_info()["uuid"] == agent.amphora_id
