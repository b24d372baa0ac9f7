"""A loopback SMTP sink for the email integration tests (tests/it/smtp.rs, tests/it/providers.rs).

Usage: python3 tests/smtp_sink.py PORT DIR [options]

Binds 127.0.0.1:PORT (0 = any free port), prints the bound port as the first stdout line, then
serves until killed (or until the process that started it goes away). Each accepted message is
written raw, as DIR/000001.eml, DIR/000002.eml, ..., beside DIR/000001.peer, ... holding the
client's address and port (which connection the message came over).

RCPT answers depend on the recipient's local part:
  reject...@  ->  550 5.1.1 <addr>: user unknown
  defer...@   ->  451 4.3.0 try again later
  anything else is accepted.

Without options no AUTH is offered (aiosmtpd hides it on a plaintext connection by default) and
there is no STARTTLS. Options:
  --auth USER:PASSWORD   offer AUTH on the plaintext connection and accept only these
                         credentials; any others get 535 5.7.8.
  --mechanisms LIST      the mechanisms offered with --auth, e.g. PLAIN or LOGIN
                         (default PLAIN,LOGIN).
  --auth-reply REPLY     answer every AUTH with REPLY (e.g. "534 5.7.9 ..."), whatever the
                         credentials.
  --require-auth         answer MAIL before a successful AUTH with 530 5.7.0.
  --echo-auth            quote the AUTH exchange back in every reply the sink composes after it
                         (the AUTH failure, RCPT's 550/451, DATA's 250): the lines re-encoded
                         exactly as the client sent them, then decoded. A server like that must
                         not make the client print the password.
  --stall-first SECONDS  answer the first message's DATA only SECONDS after it arrived (it is
                         written at once): a server slower than the client's timeout, whose late
                         reply is still owed on that connection.
  --echo-at N            with --echo-auth, pad the quote so that its first credential starts at
                         character N of the reply's text (after the code), to put it across a
                         cut in the client's error message.

Needs aiosmtpd (python3 -m pip install aiosmtpd).
"""

import argparse
import asyncio
import base64
import itertools
import os
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

MECHANISMS = ("PLAIN", "LOGIN")


def b64(data):
    return base64.b64encode(data).decode("ascii")


def quote(mechanism, login, password):
    """The AUTH exchange as the client sent it, and decoded; and where its first credential is."""
    if mechanism == "PLAIN":
        plain = b"\0" + login + b"\0" + password
        lines = [f"AUTH PLAIN {b64(plain)}"]
        first = len("AUTH PLAIN ")
    else:
        lines = ["AUTH LOGIN", b64(login), b64(password)]
        # The username is no secret; the password's base64 is the third line.
        first = len(" | ".join(lines[:2]) + " | ")
    text = " | ".join(lines) + f" | decoded: login={login.decode()} password={password.decode()}"
    return text, first


class Sink:
    def __init__(self, directory, options):
        self.directory = directory
        self.options = options
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def reply(self, session, code_and_text):
        """`code_and_text`, followed by the quoted AUTH exchange under --echo-auth."""
        echoed = getattr(session, "auth_quote", None)
        if not self.options.echo_auth or echoed is None:
            return code_and_text
        text, first = echoed
        code, _, said = code_and_text.partition(" ")
        said = f"{said}: "
        pad = ""
        if self.options.echo_at is not None:
            pad = "x" * max(0, self.options.echo_at - len(said) - first)
        return f"{code} {said}{pad}{text}"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        session.auth_quote = quote(mechanism, auth_data.login, auth_data.password)
        if self.options.auth_reply:
            return AuthResult(
                success=False, handled=False, message=self.reply(session, self.options.auth_reply)
            )
        if (auth_data.login, auth_data.password) == self.options.credentials:
            return AuthResult(success=True, auth_data=auth_data)
        invalid = self.reply(session, "535 5.7.8 Authentication credentials invalid")
        return AuthResult(success=False, handled=False, message=invalid)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("reject"):
            return self.reply(session, f"550 5.1.1 <{address}>: user unknown")
        if local.startswith("defer"):
            return self.reply(session, "451 4.3.0 try again later")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            number = next(self.counter)
        name = os.path.join(self.directory, f"{number:06d}.eml")
        # Written under another name first, so a reader never sees half a message.
        partial = name + ".part"
        with open(partial, "wb") as out:
            out.write(envelope.original_content)
        os.replace(partial, name)
        with open(os.path.join(self.directory, f"{number:06d}.peer"), "w") as out:
            out.write(f"{session.peer[0]}:{session.peer[1]}")
        if number == 1 and self.options.stall_first:
            await asyncio.sleep(self.options.stall_first)
        return self.reply(session, "250 Message accepted for delivery")


class LoopbackController(Controller):
    """Controller that also works with port 0: it learns the bound port before its self-test
    connection (which otherwise dials the literal port 0)."""

    def _trigger_server(self):
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def parse():
    parser = argparse.ArgumentParser(description="A loopback SMTP sink for tests.")
    parser.add_argument("port", type=int)
    parser.add_argument("directory")
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS))
    parser.add_argument("--auth-reply", metavar="REPLY")
    parser.add_argument("--require-auth", action="store_true")
    parser.add_argument("--echo-auth", action="store_true")
    parser.add_argument("--echo-at", type=int, metavar="N")
    parser.add_argument("--stall-first", type=float, metavar="SECONDS")
    options = parser.parse_args()
    options.credentials = None
    if options.auth is not None:
        user, sep, password = options.auth.partition(":")
        if not sep:
            parser.error("--auth takes USER:PASSWORD")
        options.credentials = (user.encode(), password.encode())
    offered = {m.strip().upper() for m in options.mechanisms.split(",") if m.strip()}
    if not offered <= set(MECHANISMS):
        parser.error(f"--mechanisms takes some of {', '.join(MECHANISMS)}")
    options.excluded = [m for m in MECHANISMS if m not in offered]
    return options


def main():
    options = parse()
    os.makedirs(options.directory, exist_ok=True)

    sink = Sink(options.directory, options)
    smtp_options = {}
    if options.auth is not None or options.auth_reply is not None or options.require_auth:
        smtp_options = {
            "authenticator": sink.authenticate,
            # The tests talk plain SMTP over loopback; aiosmtpd would otherwise hide AUTH.
            "auth_require_tls": False,
            "auth_required": options.require_auth,
            "auth_exclude_mechanism": options.excluded,
        }
    controller = LoopbackController(sink, hostname="127.0.0.1", port=options.port, **smtp_options)
    controller.start()
    print(controller.port, flush=True)

    parent = os.getppid()
    try:
        # Serve until killed; also stop if the test process died without killing us.
        while os.getppid() == parent:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
