"""A loopback SMTP sink for the email integration tests (tests/it/smtp.rs).

Usage: python3 tests/smtp_sink.py PORT DIR

Binds 127.0.0.1:PORT (0 = any free port), prints the bound port as the first stdout line, then
serves until killed (or until the process that started it goes away). Each accepted message is
written raw, as DIR/000001.eml, DIR/000002.eml, ...

RCPT answers depend on the recipient's local part:
  reject...@  ->  550 5.1.1 <addr>: user unknown
  defer...@   ->  451 4.3.0 try again later
  anything else is accepted.

No AUTH is offered (aiosmtpd hides it on a plaintext connection by default) and no STARTTLS.
Needs aiosmtpd (python3 -m pip install aiosmtpd).
"""

import itertools
import os
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: user unknown"
        if local.startswith("defer"):
            return "451 4.3.0 try again later"
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
        return "250 Message accepted for delivery"


class LoopbackController(Controller):
    """Controller that also works with port 0: it learns the bound port before its self-test
    connection (which otherwise dials the literal port 0)."""

    def _trigger_server(self):
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: smtp_sink.py PORT DIR")
    port = int(sys.argv[1])
    directory = sys.argv[2]
    os.makedirs(directory, exist_ok=True)

    controller = LoopbackController(Sink(directory), hostname="127.0.0.1", port=port)
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
