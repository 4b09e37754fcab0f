#!/usr/bin/env python3
"""Checks docs/openapi.yaml against a running chatd with schemathesis.

Starts `chatd serve` on a free 127.0.0.1 port with temporary data and runtime
directories, mints development tokens (`chatd token`), creates what the
operations need (rooms, messages, an attachment, device keys), then:
- opens two WebSockets on a room, sends every client frame and causes every
  server event, and validates each frame against the document's `Ws*` schemas
  (`x-websocket`); every event type must be seen;
- runs schemathesis with the document: every response must have a documented
  status, content type, headers and schema, no request may get a 5xx, invalid
  requests must be refused, undocumented methods answered 405 with `Allow`.
  One accepted difference is filtered in openapi_check_hooks.py (501 for TRACE).
The server is stopped by its pid at the end.

    pip install schemathesis        # once (a virtualenv is fine: pass --st)
    docs/openapi-check.py --chatd .build/debug/chatd [--max-examples 30] [--max-time 300]

Exit status: 0 when every check passed.
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, token, body=None, headers=None):
    data = None
    headers = dict(headers or {})
    headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif isinstance(body, bytes):
        data = body
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def multipart(fields, file_field, file_name, file_bytes):
    boundary = "chatd-check-" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + file_bytes + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def wait_healthy(base, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"chatd serve exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    sys.exit("chatd serve was not healthy within 60 s")


def mint(chatd, env, sub, email):
    out = subprocess.run([chatd, "token", "--sub", sub, "--email", email, "--ttl", "7200"],
                         env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def seed(base, alice, bob, bob_id):
    """The rooms and messages the operations are pointed at, one per destructive operation."""
    request(base, "GET", "/api/chat/rooms/", bob)  # bob exists from his first request on
    room = lambda name, kind="group", token=alice: request(
        base, "POST", "/api/chat/rooms/", token, {"name": name, "room_type": kind, "participant_ids": [bob_id]})["id"]
    main, to_delete, to_leave = room("main"), room("to delete"), room("to leave")
    public = request(base, "POST", "/api/chat/rooms/", bob, {"name": "public", "room_type": "public"})["id"]
    post = lambda content: request(base, "POST", f"/api/chat/rooms/{main}/messages/", alice, {"content": content})["id"]
    message, to_delete_message = post("hello world"), post("delete me")
    request(base, "POST", f"/api/chat/rooms/{main}/messages/", bob, {"content": "hello from bob"})
    body, content_type = multipart({"content": "a file"}, "file_attachment", "notes.txt", b"0123456789" * 100)
    upload = request(base, "POST", f"/api/chat/rooms/{main}/messages/", alice, body, {"Content-Type": content_type})["id"]
    # Device keys (issue 17): bob's device, whose prekeys alice claims, and one of alice's to delete.
    key = lambda n: base64.b64encode(os.urandom(n)).decode()
    keys = lambda prekeys: {"identity_key": key(64), "signed_prekey": key(32), "signature": key(64),
                            "one_time_prekeys": [key(32) for _ in range(prekeys)]}
    request(base, "PUT", f"/api/chat/keys/devices/{uuid.uuid4()}/", bob, keys(3))
    device = str(uuid.uuid4())
    request(base, "PUT", f"/api/chat/keys/devices/{device}/", alice, keys(0))
    return {
        "main": main, "to_delete": to_delete, "to_leave": to_leave, "public": public,
        "message": message, "to_delete_message": to_delete_message, "upload": upload,
        "bob": bob_id, "device": device,
    }


class WebSocket:
    """The least RFC 6455 client that reads and writes JSON text frames (masked, unfragmented)."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("handshake closed")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())

    def send(self, obj):
        payload = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self, timeout):
        """The next text frame as JSON, or None when none came within `timeout` s."""
        self.sock.settimeout(timeout)
        try:
            while True:
                first, second = self._read(2)
                n = second & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read(8))[0]
                payload = self._read(n)
                if first & 0x0F == 0x1:
                    return json.loads(payload)
                if first & 0x0F == 0x8:
                    raise ConnectionError(f"closed by the server: {payload[:2].hex()}")
        except socket.timeout:
            return None

    def close(self):
        self.sock.close()


def check_websocket(spec, base, port, alice, bob, bob_id):
    """Every frame sent and received on a live room against x-websocket's schemas;
    fails unless each server event type was seen and valid."""
    import jsonschema
    def validator(name):
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    client, server = validator("WsClientMessage"), validator("WsServerEvent")
    room = request(base, "POST", "/api/chat/rooms/", alice, {"name": "ws", "participant_ids": [bob_id]})["id"]
    a = WebSocket(port, f"/ws/chat/{room}/?token={alice}")
    b = WebSocket(port, f"/ws/chat/{room}/?token={bob}&session_type=check")
    seen, problems = {}, []
    def drain(ws, quiet=0.5):
        while (event := ws.receive(quiet)) is not None:
            seen.setdefault(event.get("type"), event)
            problems.extend(f"server event {json.dumps(event)[:200]}: {e.message}" for e in server.iter_errors(event))
    def send(ws, frame, valid=True):
        if valid:
            problems.extend(f"client frame {frame}: {e.message}" for e in client.iter_errors(frame))
        ws.send(frame)
    send(a, {"type": "ping"})
    send(b, {"type": "typing", "is_typing": True})
    send(a, {"type": "message", "content": "over the socket", "client_msg_id": "ws-1"})
    drain(a); drain(b)
    message = seen.get("message", {}).get("message", {}).get("id")
    send(a, {"type": "message", "content": "again", "client_msg_id": "ws-1"})  # the original, to a only
    if message:
        send(b, {"type": "read_receipt", "message_id": message})
        request(base, "PATCH", f"/api/chat/rooms/{room}/messages/{message}/", alice, {"content": "edited"})
        request(base, "POST", f"/api/chat/rooms/{room}/messages/{message}/react/", bob, {"emoji": "👍"})
        request(base, "POST", f"/api/chat/rooms/{room}/messages/{message}/pin/", alice)
        request(base, "DELETE", f"/api/chat/rooms/{room}/messages/{message}/pin/", alice)
        request(base, "PATCH", f"/api/chat/rooms/{room}/members/{bob_id}/", alice, {"role": "admin"})
        request(base, "DELETE", f"/api/chat/rooms/{room}/messages/{message}/", alice)
    # A call: call_started, call_joined, a call_signal (to b alone), call_left, then call_ended.
    call = request(base, "POST", f"/api/chat/rooms/{room}/calls/", alice, {"media": "audio"})["id"]
    request(base, "POST", f"/api/chat/calls/{call}/join/", bob)
    send(a, {"type": "call_signal", "call_id": call, "to": bob_id, "signal": {"type": "offer", "sdp": "v=0"}})
    drain(b)
    request(base, "POST", f"/api/chat/calls/{call}/leave/", bob)
    request(base, "POST", f"/api/chat/calls/{call}/leave/", alice)
    send(a, "not json", valid=False)
    send(a, {"type": "nonsense"}, valid=False)
    drain(a)
    b.close()
    drain(a, quiet=1.5)
    a.close()
    wanted = server.schema["components"]["schemas"]["WsServerEvent"]["discriminator"]["mapping"]
    problems += [f"no {kind} event was received" for kind in wanted if kind not in seen]
    for problem in problems:
        print("WebSocket:", problem)
    print(f"WebSocket: {len(seen)} event types seen ({', '.join(sorted(map(str, seen)))}), "
          + ("all valid" if not problems else f"{len(problems)} problems"), flush=True)
    return not problems


def config_toml(ids):
    """schemathesis.toml: which room and message (user, device) each operation is pointed at."""
    def op(operation_id, room, message=None):
        params = f'"path.room_id" = "{room}"'
        if message:
            params += f'\n"path.message_id" = "{message}"'
        return f'[[operations]]\ninclude-operation-id = "{operation_id}"\n[operations.parameters]\n{params}\n'
    main = ids["main"]
    hooks = os.path.join(HERE, "openapi_check_hooks.py")
    blocks = [f'hooks = "{hooks}"\n']
    blocks += [op(o, main) for o in ("getRoom", "updateRoom", "replaceRoom", "markRoomRead", "typingUsers",
                                    "listMessages", "createMessage", "listMembers", "addMembers", "listPins",
                                    "startCall", "listCalls")]
    blocks += [op(o, main, ids["message"]) for o in ("getMessage", "updateMessage", "react", "markMessageRead",
                                                     "pinMessage", "unpinMessage")]
    blocks += [
        op("downloadAttachment", main, ids["upload"]),
        op("deleteMessage", main, ids["to_delete_message"]),
        op("deleteRoom", ids["to_delete"]),
        op("leaveRoom", ids["to_leave"]),
        op("joinRoom", ids["public"]),
    ]
    path = lambda operation_id, name, value: (f'[[operations]]\ninclude-operation-id = "{operation_id}"\n'
                                              f'[operations.parameters]\n"path.{name}" = "{value}"\n')
    blocks += [path("claimKeys", "user_id", ids["bob"]), path("deleteDevice", "device_id", ids["device"])]
    return "\n".join(blocks)


def children_exited(log_path):
    """How many children exited while serving (a crash is a fault even when the
    client saw only a reset), printing each distinct crash and its first frames with a source file."""
    lines = open(log_path, errors="replace").read().splitlines()
    crashes = {}
    for i, line in enumerate(lines):
        if "Fatal error" in line or line.startswith("*** Swift runtime failure"):
            crashed = next((j for j in range(i, min(i + 400, len(lines)))
                            if lines[j].startswith("Thread ") and lines[j].endswith(" crashed:")), i)
            frames = [l.strip() for l in lines[crashed:crashed + 40] if "/Sources/" in l][:2]
            crashes.setdefault(line.strip(), frames)
    for reason, frames in crashes.items():
        print(f"chatd crashed: {reason}" + "".join(f"\n    {frame[:300]}" for frame in frames))
    return sum("child exited" in line for line in lines)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chatd", default=".build/debug/chatd", help="the chatd binary")
    parser.add_argument("--spec", default=os.path.join(HERE, "openapi.yaml"))
    parser.add_argument("--st", default=shutil.which("st") or "st", help="the schemathesis CLI")
    parser.add_argument("--max-examples", type=int, default=30, help="test cases per operation and phase")
    parser.add_argument("--max-time", type=int, default=300, help="seconds for the whole schemathesis run")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--report-dir", default=None, help="keep schemathesis's JUnit and NDJSON reports here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server log)")
    parser.add_argument("st_args", nargs="*", help="more schemathesis arguments, after --")
    args = parser.parse_args()

    chatd = os.path.abspath(args.chatd)
    work = tempfile.mkdtemp(prefix="chatd-openapi-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update({
        "CHAT_LISTEN": f"127.0.0.1:{port}", "CHAT_DATA_DIR": os.path.join(work, "data"),
        "CHAT_RUNTIME_DIR": os.path.join(work, "run"), "CHAT_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "CHAT_RATE_LIMITS": "off", "CHAT_STORE_WORKERS": "1", "CHAT_FRONTENDS": "1",
    })
    log = open(os.path.join(work, "serve.log"), "w")
    status = 1
    proc = subprocess.Popen([chatd, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    print(f"chatd serve: pid {proc.pid}, {base}, log {work}/serve.log", flush=True)
    try:
        wait_healthy(base, proc, time.monotonic() + 60)
        bob_id = str(uuid.uuid4())
        alice = mint(chatd, env, str(uuid.uuid4()), "alice@example.com")
        bob = mint(chatd, env, bob_id, "bob@example.com")
        ids = seed(base, alice, bob, bob_id)
        with open(args.spec) as f:
            spec = yaml.safe_load(f)
        websocket_ok = check_websocket(spec, base, port, alice, bob, bob_id)
        config = os.path.join(work, "schemathesis.toml")
        with open(config, "w") as f:
            f.write(config_toml(ids))
        command = [args.st, "--config-file", config, "run", args.spec, "--url", base,
                   "--header", f"Authorization: Bearer {alice}",
                   "--max-examples", str(args.max_examples), "--max-time", str(args.max_time),
                   "--workers", "1", "--request-timeout", "15", "--checks", "all",
                   # A valid shape with ids of no user or message is refused with 400
                   # by design; schemas cannot say which ids exist.
                   "--exclude-checks", "positive_data_acceptance",
                   "--continue-on-failure", "--no-color"]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        if args.report_dir:
            command += ["--report", "junit,ndjson", "--report-dir", args.report_dir]
        command += args.st_args
        print(" ".join(c if "Bearer" not in c else "'Authorization: Bearer …'" for c in command), flush=True)
        status = subprocess.run(command, cwd=work).returncode
        if not websocket_ok:
            status = status or 1
        if proc.poll() is not None:
            print(f"chatd serve exited during the run ({proc.returncode})", flush=True)
            status = status or 1
    finally:
        log.flush()
        crashes = children_exited(os.path.join(work, "serve.log"))
        stop(proc)
        log.close()
        if crashes:
            status = 1
        print(f"chatd serve stopped; children that exited during the run: {crashes}", flush=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
