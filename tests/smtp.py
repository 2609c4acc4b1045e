"""A real SMTP server on 127.0.0.1 for the email tests (aiosmtpd).

The server keeps its port across ``stop()`` and ``start()``, so a test
can take it down ("nothing listens": connection refused) and bring it
back for the next watchdog run::

    def test_mail_arrives(smtp_server):
        smtp_server.require_auth("alice@example.org", "p@ss%w#rd")
        send_something(smtp_server.email_target())
        message = smtp_server.messages[0]      # email.message.EmailMessage

tests/conftest.py offers the fixture to every module with
``from tests.smtp import smtp_server  # noqa: F401``.
"""

import email
import email.policy
import socket
import threading
import warnings

import pytest

HOST = "127.0.0.1"


class SmtpServer:
    """An SMTP server on loopback that keeps every message it accepts.

    Modes: plain (anyone may send), AUTH required (``require_auth``;
    PLAIN and LOGIN without TLS, which aiosmtpd refuses unless told,
    since the test traffic never leaves 127.0.0.1), and down (``stop``).
    """

    def __init__(self):
        self.host = HOST
        self.port = _free_port()
        self.messages = []
        self.envelopes = []
        self.logins = []
        self.users = None
        self._controller = None
        self._lock = threading.Lock()

    @property
    def listening(self):
        return self._controller is not None

    def start(self):
        from aiosmtpd.controller import Controller

        if self.listening:
            return self
        options = {}
        if self.users is not None:
            options = {"authenticator": self._authenticate,
                       "auth_required": True,
                       "auth_require_tls": False}
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port,
            server_hostname="smtp.test", ready_timeout=5, **options)
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": wanted here.
            warnings.simplefilter("ignore", UserWarning)
            self._controller.start()
        return self

    def stop(self):
        """Nothing listens on the port until ``start`` is called again."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def require_auth(self, user, password):
        """Restart the server so that it accepts mail only after AUTH."""
        self.users = {user: password}
        running = self.listening
        self.stop()
        if running:
            self.start()

    def email_target(self, to="ops@example.org", user=None, password=None,
                     sender="drover@example.org"):
        """The structured [notify] email form that reaches this server."""
        target = {"host": self.host, "port": self.port, "security": "none",
                  "from": sender, "to": [to] if isinstance(to, str) else to}
        if user is not None:
            target["user"] = user
            target["password"] = password
        return target

    def clear(self):
        with self._lock:
            self.messages.clear()
            self.envelopes.clear()

    def _accept(self, envelope):
        message = email.message_from_bytes(envelope.content,
                                           policy=email.policy.default)
        with self._lock:
            self.envelopes.append(envelope)
            self.messages.append(message)

    def _authenticate(self, server, session, envelope, mechanism, data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8")
        password = data.password.decode("utf-8")
        accepted = self.users.get(user) == password
        self.logins.append((user, accepted))
        # handled=False: aiosmtpd answers 535 itself; with the default
        # (True) it answers nothing and the client waits for its timeout.
        return AuthResult(success=accepted, handled=accepted)


class _Handler:
    def __init__(self, server):
        self.server = server

    async def handle_DATA(self, server, session, envelope):
        self.server._accept(envelope)
        return "250 Message accepted for delivery"


def _free_port():
    # The kernel picks a free port; the server binds it a moment later.
    # Nothing else on a test machine races for loopback ports that fast.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    """A started plain SMTP server on 127.0.0.1; stopped after the test."""
    server = SmtpServer().start()
    yield server
    server.stop()
