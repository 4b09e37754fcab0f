#!/usr/bin/env python3
"""Checks docs/openapi.yaml against a running chatd with schemathesis.

Starts `chatd serve` on a free 127.0.0.1 port with temporary data and runtime
directories, mints development tokens (`chatd token`), creates what the
operations need (rooms, messages, an attachment), then runs schemathesis with
the document: every response must have a documented status, content type,
headers and schema, no request may get a 5xx, invalid requests must be refused
and valid ones accepted. The server is stopped by its pid at the end.

    pip install schemathesis        # once (a virtualenv is fine: pass --st)
    docs/openapi-check.py --chatd .build/debug/chatd [--max-examples 30] [--max-time 300]

Exit status: schemathesis's (0 when every check passed).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

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
    return {
        "main": main, "to_delete": to_delete, "to_leave": to_leave, "public": public,
        "message": message, "to_delete_message": to_delete_message, "upload": upload,
    }


def config_toml(ids):
    """schemathesis.toml: which room and message each operation is pointed at."""
    def op(operation_id, room, message=None):
        params = f'"path.room_id" = "{room}"'
        if message:
            params += f'\n"path.message_id" = "{message}"'
        return f'[[operations]]\ninclude-operation-id = "{operation_id}"\n[operations.parameters]\n{params}\n'
    main = ids["main"]
    hooks = os.path.join(HERE, "openapi_check_hooks.py")
    blocks = [f'hooks = "{hooks}"\n']
    blocks += [op(o, main) for o in ("getRoom", "updateRoom", "replaceRoom", "markRoomRead", "typingUsers",
                                    "listMessages", "createMessage")]
    blocks += [op(o, main, ids["message"]) for o in ("getMessage", "updateMessage", "react", "markMessageRead")]
    blocks += [
        op("downloadAttachment", main, ids["upload"]),
        op("deleteMessage", main, ids["to_delete_message"]),
        op("deleteRoom", ids["to_delete"]),
        op("leaveRoom", ids["to_leave"]),
        op("joinRoom", ids["public"]),
    ]
    return "\n".join(blocks)


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
    proc = subprocess.Popen([chatd, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    print(f"chatd serve: pid {proc.pid}, {base}, log {work}/serve.log", flush=True)
    try:
        wait_healthy(base, proc, time.monotonic() + 60)
        bob_id = str(uuid.uuid4())
        alice = mint(chatd, env, str(uuid.uuid4()), "alice@example.com")
        bob = mint(chatd, env, bob_id, "bob@example.com")
        ids = seed(base, alice, bob, bob_id)
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
        if proc.poll() is not None:
            print(f"chatd serve exited during the run ({proc.returncode})", flush=True)
            status = status or 1
        return status
    finally:
        log.flush()
        restarts = sum("child exited" in line for line in open(os.path.join(work, "serve.log")))
        stop(proc)
        log.close()
        print(f"chatd serve stopped; children that exited during the run: {restarts}", flush=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
