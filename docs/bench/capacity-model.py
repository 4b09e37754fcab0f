#!/usr/bin/env python3
"""docs/capacity.md's arithmetic, so the numbers can be rerun with other inputs.

    python3 docs/bench/capacity-model.py                  # the model as docs/capacity.md states it
    python3 docs/bench/capacity-model.py --users 200000 --rate 10000 --frontend-hosts 2

Every measured input names its docs/benchmarks.md section; inputs marked
ESTIMATE are not measured (docs/capacity.md, "Unmeasured terms").
"""
import argparse

# Room mix: (name, members, share of messages). Members connected: the sender,
# plus each other member with probability `connected`.
MIX = [("direct message", 2, 0.40), ("small group", 8, 0.35), ("project room", 50, 0.20), ("large channel", 2000, 0.05)]

p = argparse.ArgumentParser()
p.add_argument("--large-members", type=int, default=2000, help="members of a large channel (the mix's last kind)")
p.add_argument("--room-members", type=int, help="instead of the mix: every room this size (a chatd-load run's --members)")
p.add_argument("--users", type=float, default=1_000_000, help="connected users (one socket each)")
p.add_argument("--rate", type=float, default=50_000, help="messages sent per second, cluster-wide")
p.add_argument("--connected", type=float, default=1 / 3, help="fraction of a room's other members connected")
p.add_argument("--frontend-hosts", type=int, default=4)
p.add_argument("--cores", type=int, default=16, help="vCPUs per frontend host = frontend processes per host (frontends: auto)")
p.add_argument("--per-delivery", type=float, default=5.8, help="µs frontend CPU per delivery (§11 row 4: 4.0; §11g 5.1; §14a 5.4-5.8)")
p.add_argument("--per-send", type=float, default=20, help="µs frontend CPU per message sent (§11 row 1: 57 µs incl. 10 deliveries, minus 10 x 4.0 = 17)")
p.add_argument("--per-event-process", type=float, default=26, help="µs per room event per frontend process that receives it (capacity.md §9: 2 frontends cost 26 µs a message more than 1)")
p.add_argument("--broker-per-event", type=float, default=7, help="µs broker CPU per event forwarded in (§11 row 1: 20 µs a message = 3 forwards)")
p.add_argument("--broker-per-copy", type=float, default=4, help="µs broker CPU per extra subscriber an event is copied to (capacity.md §9: 23 -> 27 µs with a second frontend)")
p.add_argument("--store", type=float, default=74, help="µs store CPU per message at high load (§11 row 1; 267-353 at 500 msg/s per process, §11e/§14)")
p.add_argument("--search", type=float, default=20, help="µs search CPU per message (§11 row 1, SQLite FTS5; PostgreSQL: unmeasured)")
p.add_argument("--handshake", type=float, default=740, help="µs server CPU per socket opened (§11f: frontend 395, store 128, receipts 113, broker 88)")
p.add_argument("--socket-kib", type=float, default=9.67, help="KiB frontend RSS per idle WebSocket (§11 row 5)")
p.add_argument("--session-hours", type=float, default=1, help="ESTIMATE mean connection lifetime (reconnect churn)")
p.add_argument("--event-bytes", type=float, default=1024, help="bytes per room event on the bus (protocol.md, Memory bounds: ~1 KB)")
p.add_argument("--frame-bytes", type=float, default=350, help="ESTIMATE bytes per delivered WebSocket frame (128-byte content + JSON envelope)")
p.add_argument("--curve-hop", type=float, default=8, help="ESTIMATE µs of CPU CURVE adds per tcp hop, both ends: benchmarks.md's CURVE section measured +50 µs a message over 6 hops on one quiet host (+95 at load 22-26; the cipher alone, docs/bench/curve-box.c, is 1.38 + 1.59 for 1 KiB)")
a = p.parse_args()
MIX[-1] = (MIX[-1][0], a.large_members, MIX[-1][2])
if a.room_members:
    MIX[:] = [(f"room of {a.room_members}", a.room_members, 1.0)]

P = a.frontend_hosts * a.cores  # frontend processes in the cluster
rows, deliveries, procs, local_copies = [], 0.0, 0.0, 0.0
for name, members, share in MIX:
    d = 1 + (members - 1) * a.connected  # connected members = deliveries per message
    k = P * (1 - (1 - 1 / P) ** d)       # frontend processes holding at least one of them (sockets spread at random)
    kh = a.cores * (1 - (1 - 1 / P) ** d)  # of which on one host
    rows.append((name, members, share, d, k))
    deliveries += share * d
    procs += share * k
    local_copies += share * kh

print(f"# {a.users:,.0f} users, {a.rate:,.0f} msg/s, {a.frontend_hosts} frontend hosts x {a.cores} vCPU ({P} frontend processes)")
print("\n| room kind | members | share of messages | deliveries per message | frontend processes per message |\n|---|---|---|---|---|")
for name, members, share, d, k in rows:
    print(f"| {name} | {members:,} | {share:.0%} | {d:,.1f} | {k:,.1f} |")
print(f"| **weighted** | | | **{deliveries:.1f}** | **{procs:.1f}** |")

D = a.rate * deliveries
fe = {
    "deliveries": D * a.per_delivery,
    "messages sent (parse, command, ack)": a.rate * a.per_send,
    "events received (per frontend process)": a.rate * procs * a.per_event_process,
    "handshakes (churn)": a.users / (a.session_hours * 3600) * 395,
}
cores = lambda us_per_s: us_per_s / 1e6
print(f"\ndeliveries/s: {D:,.0f}; per socket per second: {D / a.users:.2f}")
print("\nFrontend CPU, whole cluster (cores):")
for k, v in fe.items():
    print(f"  {k}: {cores(v):.2f}")
fe_total = cores(sum(fe.values()))
print(f"  total: {fe_total:.1f}  -> per host {fe_total / a.frontend_hosts:.2f} of {a.cores} ({fe_total / a.frontend_hosts / a.cores:.0%})")

broker_events = a.rate * (a.broker_per_event + a.broker_per_copy * max(local_copies - 1, 0))
broker_cmds = a.rate / a.frontend_hosts * (20 - a.broker_per_event)  # its share of commands and replies
print(f"\nBroker, per frontend host (one thread): every room event in ({cores(a.rate * a.broker_per_event):.2f}), "
      f"copies to {local_copies:.2f} local frontends per event, own commands/replies {cores(broker_cmds):.2f}: "
      f"total {cores(broker_events + broker_cmds):.2f} cores")

mem_sockets = a.users * a.socket_kib / 1024 / 1024
print(f"\nFrontend memory: sockets {mem_sockets:.1f} GiB (+ {P} processes x ~45 MB = {P * 45 / 1024:.1f} GiB); per host {mem_sockets / a.frontend_hosts + a.cores * 45 / 1024:.1f} GiB")
print(f"Sockets per frontend process: {a.users / P:,.0f} (LimitNOFILE 65536 in systemd/chatd.service)")

store = cores(a.rate * a.store)
print(f"\nStore CPU: {store:.1f} cores at {a.store} µs/msg; search {cores(a.rate * a.search):.1f}")
copies = a.rate * a.frontend_hosts
print(f"Events published by the workers: {copies:,.0f}/s ({a.frontend_hosts} copies of each), "
      f"{copies * a.event_bytes * 8 / 1e9:.2f} Gbit/s out of the workers hosts; per broker link {a.rate * a.event_bytes * 8 / 1e9:.2f} Gbit/s")
curve = a.rate * (2 + a.frontend_hosts) * a.curve_hop
print(f"CURVE (estimate, from one host's measurement): {cores(curve):.2f} cores cluster-wide ({(2 + a.frontend_hosts) * a.curve_hop:.0f} µs a message: command and reply hops + one per broker)")
print(f"To clients: {D * a.frame_bytes * 8 / 1e9:.2f} Gbit/s in all, {D * a.frame_bytes * 8 / 1e9 / a.frontend_hosts:.2f} per frontend host")
storm = a.users / a.frontend_hosts
print(f"\nOne frontend host lost: {storm:,.0f} reconnects = {storm * a.handshake / 1e6:,.0f} CPU-seconds "
      f"(frontends {storm * 395 / 1e6:,.0f}, workers {storm * (128 + 113) / 1e6:,.0f}, brokers {storm * 88 / 1e6:,.0f})")
