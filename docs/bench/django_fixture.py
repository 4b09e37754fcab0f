#!/usr/bin/env python3
"""Seeds the Django reference server with the REST benchmark's data, the same
as `chatd-load --rest-fixture`: user "bench" in 100 rooms (one message each) and
a room of 100,000 messages. Writes {token, rooms, messages, cursor} as JSON.

Run with the reference's virtualenv, against a running reference server:

    CHAT_JWT_SECRET=... $REF/.venv/bin/python docs/bench/django_fixture.py $REF 8001 out.json
"""
import json, os, sys, time, urllib.request
from datetime import timedelta

ref, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, ref)
os.chdir(ref)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "srv.settings")
import django  # noqa: E402
django.setup()
import jwt  # noqa: E402
from django.utils import timezone  # noqa: E402
from chat.models import ChatRoom, Message  # noqa: E402
from users.models import User  # noqa: E402
from users.authentication import user_id_for_subject  # noqa: E402

token = jwt.encode({"sub": "bench", "email": "bench@example.com", "name": "Bench", "exp": int(time.time()) + 86400},
                   os.environ["CHAT_JWT_SECRET"], algorithm="HS256")
base = f"http://127.0.0.1:{port}"
# The first authenticated request provisions the user, as for chatd.
urllib.request.urlopen(urllib.request.Request(f"{base}/api/chat/rooms/", headers={"Authorization": f"Bearer {token}"})).read()
user = User.objects.get(pk=user_id_for_subject("bench"))
for r in range(100):
    room = ChatRoom.objects.create(name=f"room {r}", room_type="group", created_by=user)
    room.participants.add(user)
    Message.objects.create(room=room, sender=user, content=f"hello {r}")
big = ChatRoom.objects.create(name="big", room_type="group", created_by=user)
big.participants.add(user)
now = timezone.now()
Message.objects.bulk_create(
    [Message(room=big, sender=user, content=f"w {i} " + "x" * 120, timestamp=now - timedelta(microseconds=100_000 - i))
     for i in range(100_000)],
    batch_size=5000,
)
middle = Message.objects.filter(room=big).order_by("-timestamp", "-id")[49_999]
json.dump({
    "token": token,
    "rooms": f"{base}/api/chat/rooms/",
    "messages": f"{base}/api/chat/rooms/{big.id}/messages/",
    "cursor": f"{base}/api/chat/rooms/{big.id}/messages/?before={middle.id}",
}, open(out, "w"))
print("fixture ready:", out)
