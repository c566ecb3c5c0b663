#!/usr/bin/env python3
"""A real SMTP server for csmd's e-mail tests, with failures on demand.

aiosmtpd speaks the protocol; this script only decides, per connection and
per command, what to answer. It binds 127.0.0.1, prints `READY <port>` once
listening, and stores every accepted message in the maildir as `<n>.eml`
(the raw DATA bytes) and `<n>.json` (envelope, size and the Unix time it
was accepted), the `.json` last,
each written to a temporary name and renamed so a reader never sees half a
file.

Behaviour comes from the JSON rules file, looked at again (one stat) on
every connection and command, so a test can change it while the server runs:

  {"reject_rcpt": {"dead@example.net": "550 5.1.1 No such user"}}
      answer RCPT TO for that address with that reply
  {"tempfail_data": {"count": 3, "reply": "451 4.3.0 Try again later"}}
      answer the next `count` messages at the end of DATA with that reply;
      how many were answered so is kept in `<rules>.state`, so it survives
      a restart of this server and starts over whenever the rules file is
      written again
  {"greeting_421": true}
      greet with `421 4.3.2 Service not available` and close
  {"delay_data_ms": N}
      wait N ms before answering the end of DATA
  {"auth": {"user": "u", "password": "p"}}
      require AUTH PLAIN or LOGIN (without TLS: the server is loopback only)
  {"close_idle_after_ms": N}
      close a connection that has been idle for N ms, without a word

Connections are counted in `<rules>.connections` as {"opened": n, "closed": m}
(whoever closed them), so a test can wait until the server has hung up on
an idle client.

With `--tls starttls` the server offers and requires STARTTLS; with
`--tls implicit` it speaks TLS from the first byte (port 465 style). Its
certificate, for `localhost` and 127.0.0.1, is signed by a throwaway CA
made with trustme (from PyPI) and kept in `--tls-dir` as `ca.pem` (which
the client must trust), `cert.pem` and `key.pem`, so a restart serves the
same certificate.
"""

import argparse
import asyncio
import errno
import json
import logging
import os
import sys
import time
import warnings

try:
    from aiosmtpd.smtp import SMTP, AuthResult
except ImportError:
    print(
        "aiosmtpd is not installed: run pip install aiosmtpd (scripts/test does it)",
        file=sys.stderr,
    )
    sys.exit(3)

HOSTNAME = "smtp.test.invalid"
# The exit code when trustme, needed for --tls, is missing.
EXIT_NO_TRUSTME = 4
GREETING_421 = b"421 4.3.2 Service not available\r\n"
# How long a restart on a fixed port keeps trying while the old socket lingers.
BIND_RETRY_SECONDS = 5.0


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Rules:
    """The rules file, reloaded when it changes, and the tempfail budget."""

    def __init__(self, path):
        self.path = path
        self.state_path = path + ".state"
        self.identity = None
        self.rules = {}

    def current(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.identity, self.rules = None, {}
            return self.rules
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if identity != self.identity:
            with open(self.path, "rb") as f:
                text = f.read()
            self.rules = json.loads(text) if text.strip() else {}
            self.identity = identity
        return self.rules

    def _generation(self):
        # A new write of the rules file is a new generation, even with the
        # same content, so a test can ask for the same failures twice.
        ino, mtime_ns, size = self.identity
        return f"{ino}:{mtime_ns}:{size}"

    def take_tempfail(self):
        """The reply for this DATA if it is one of the next `count`, else None."""
        rule = self.current().get("tempfail_data")
        if not rule or self.identity is None:
            return None
        generation = self._generation()
        used = 0
        try:
            with open(self.state_path) as f:
                state = json.load(f)
            if state.get("generation") == generation:
                used = state.get("tempfail_used", 0)
        except (FileNotFoundError, ValueError):
            pass
        if used >= rule.get("count", 0):
            return None
        state = {"generation": generation, "tempfail_used": used + 1}
        write_atomically(self.state_path, json.dumps(state).encode())
        return rule.get("reply", "451 4.3.0 Try again later")


class Maildir:
    def __init__(self, path):
        self.path = path
        os.makedirs(path, exist_ok=True)
        # A restarted server goes on numbering after what is already there.
        numbers = [
            int(name[:-5])
            for name in os.listdir(path)
            if name.endswith(".json") and name[:-5].isdigit()
        ]
        self.next = max(numbers, default=0) + 1

    def store(self, mail_from, rcpt_tos, raw):
        name = os.path.join(self.path, f"{self.next:06d}")
        self.next += 1
        write_atomically(name + ".eml", raw)
        meta = {
            "mail_from": mail_from,
            "rcpt_tos": rcpt_tos,
            "size": len(raw),
            "received_at": time.time(),
        }
        write_atomically(name + ".json", json.dumps(meta).encode())


class Handler:
    def __init__(self, rules, maildir):
        self.rules = rules
        self.maildir = maildir

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rules.current().get("reject_rcpt", {}).get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        delay_ms = self.rules.current().get("delay_data_ms", 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        reply = self.rules.take_tempfail()
        if reply:
            return reply
        self.maildir.store(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
        return "250 OK: queued"


class Refuse(asyncio.Protocol):
    """A server that is up but will not serve: 421 and hang up."""

    def connection_made(self, transport):
        transport.write(GREETING_421)
        transport.close()


class Connections:
    """How many connections were opened and closed, kept in a JSON file."""

    def __init__(self, path):
        self.path = path
        self.opened = 0
        self.closed = 0
        self.write()

    def write(self):
        counts = {"opened": self.opened, "closed": self.closed}
        write_atomically(self.path, json.dumps(counts).encode())

    def open(self):
        self.opened += 1
        self.write()

    def close(self):
        self.closed += 1
        self.write()


class CountedSMTP(SMTP):
    """aiosmtpd's SMTP session, counted in and out."""

    def __init__(self, *args, connections, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = connections

    def connection_made(self, transport):
        self.connections.open()
        super().connection_made(transport)

    def connection_lost(self, exc):
        self.connections.close()
        super().connection_lost(exc)


def authenticator_for(credentials):
    user = credentials.get("user", "").encode()
    password = credentials.get("password", "").encode()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and auth_data.login == user
            and auth_data.password == password
        )
        # handled=False: aiosmtpd then answers 535 itself, as a real server does.
        return AuthResult(success=ok, handled=False)

    return authenticate


def tls_context(tls_dir):
    """The server's TLS context, its CA and certificate made on first use."""
    import ssl

    ca_path = os.path.join(tls_dir, "ca.pem")
    cert_path = os.path.join(tls_dir, "cert.pem")
    key_path = os.path.join(tls_dir, "key.pem")
    if not os.path.exists(ca_path):
        try:
            import trustme
        except ImportError:
            print(
                "trustme is not installed: run pip install trustme (scripts/test does it)",
                file=sys.stderr,
            )
            sys.exit(EXIT_NO_TRUSTME)
        os.makedirs(tls_dir, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        write_atomically(cert_path, b"".join(b.bytes() for b in cert.cert_chain_pems))
        write_atomically(key_path, cert.private_key_pem.bytes())
        write_atomically(ca_path, ca.cert_pem.bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


def connection_factory(loop, rules, handler, connections, starttls_context):
    def new_connection():
        current = rules.current()
        if current.get("greeting_421"):
            return Refuse()
        options = {}
        if starttls_context:
            options.update(tls_context=starttls_context, require_starttls=True)
        auth = current.get("auth")
        if auth:
            options.update(
                authenticator=authenticator_for(auth),
                auth_required=True,
                auth_require_tls=False,
            )
        idle_ms = current.get("close_idle_after_ms")
        if idle_ms:
            options["timeout"] = idle_ms / 1000
        return CountedSMTP(
            handler, hostname=HOSTNAME, loop=loop, connections=connections, **options
        )

    return new_connection


async def listen(loop, factory, port, ssl_context=None):
    deadline = loop.time() + BIND_RETRY_SECONDS
    while True:
        try:
            # asyncio sets SO_REUSEADDR, so TIME_WAIT does not block a
            # restart; a socket of the old process still closing might.
            return await loop.create_server(factory, "127.0.0.1", port, ssl=ssl_context)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or port == 0 or loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def main(args):
    loop = asyncio.get_running_loop()
    rules = Rules(args.rules)
    handler = Handler(rules, Maildir(args.maildir))
    connections = Connections(args.rules + ".connections")
    context = tls_context(args.tls_dir) if args.tls else None
    starttls = context if args.tls == "starttls" else None
    implicit = context if args.tls == "implicit" else None
    factory = connection_factory(loop, rules, handler, connections, starttls)
    server = await listen(loop, factory, args.port, implicit)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--rules", required=True)
    parser.add_argument("--tls", choices=["starttls", "implicit"])
    parser.add_argument("--tls-dir", help="where the CA and certificate are kept")
    args = parser.parse_args()
    # aiosmtpd warns, rightly, that AUTH without TLS is unsafe; here it is
    # loopback only, and the warning would only bury the useful log lines.
    warnings.filterwarnings("ignore", module="aiosmtpd")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        pass
