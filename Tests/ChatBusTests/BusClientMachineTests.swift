import ChatBus
import ChatWire
import Testing

typealias Machine = BusClientMachine<String>

/// What the machine pushed; refuses pushes to the queues in `refusing`, as a
/// PUSH at its high-water mark does.
final class Link {
    var sent: [Machine.Outbound] = []
    var refusing: Set<String> = []

    func push(_ outbound: Machine.Outbound) -> Bool {
        guard !refusing.contains(outbound.queue) else { return false }
        sent.append(outbound)
        return true
    }

    /// Request ids sent to `queue`, in order.
    func ids(to queue: String) -> [String] { sent.filter { $0.queue == queue }.map(\.command.requestID) }
}

/// A frontend's bus, driven by hand: time moves only when a test says so.
/// Tickets are the request ids.
final class Bus {
    static let ms: UInt64 = 1_000_000
    var machine: Machine
    var now: UInt64 = 1_000 * ms
    let link = Link()
    /// Answers in the order they were given, by request id.
    var answers: [(id: String, result: Result<Event, BusFailure>)] = []
    var delivered: [RoomEvent] = []
    var facts: [Machine.Fact] = []
    var gaps: [LinkGap] = []

    init(shards: Int = 1, policy: RetryPolicy = RetryPolicy(retryInterval: 750 * Bus.ms, deadline: 10_000 * Bus.ms)) {
        machine = Machine(policy: policy, shards: shards)
    }

    func take(_ actions: [Machine.Action]) {
        for action in actions {
            switch action {
            case .complete(let id, let result): answers.append((id, result))
            case .deliver(let event): delivered.append(event)
            case .heartbeat: break
            case .linkGap(let gap): gaps.append(gap)
            case .log(let fact): facts.append(fact)
            }
        }
    }

    func command(_ id: String, _ kind: CommandKind) -> Command {
        Command(kind: kind, requestID: id, origin: "fe", user: [], body: Array(id.utf8))
    }

    /// A command to the store shard of `room`, or to the role of `kind`.
    func send(_ id: String, _ kind: CommandKind = .messageCreate, room: String = "r") {
        let submission = Machine.Submission(
            destination: .of(kind, shardKey: room), command: command(id, kind), ticket: id,
            deadline: now + machine.policy.deadline)
        take(machine.submit(submission, now: now, push: link.push))
    }

    func receive(_ event: Event) { take(machine.receive(event, now: now, push: link.push)) }
    func reply(_ id: String, _ kind: CommandKind = .messageCreate) { receive(.reply(to: command(id, kind), status: .ok, body: [])) }
    func heartbeat(_ worker: WorkerName, pid: Int32, failed: Bool = false, link: UInt32 = 0) {
        receive(Heartbeat(worker: worker, pid: pid, failed: failed, link: link).event)
    }
    func roomEvent(_ room: String, key: String) { receive(Event(topic: Topic.room(room), kind: .roomEvent, key: key, body: [])) }
    func writable(_ queue: String) { take(machine.writable(queue: queue, now: now, push: link.push)) }
    func advance(ms: UInt64) {
        now += ms * Bus.ms
        take(machine.tick(now: now, push: link.push))
    }

    func answer(_ id: String) -> Result<Event, BusFailure>? { answers.last { $0.id == id }?.result }
    func answerCount(_ id: String) -> Int { answers.filter { $0.id == id }.count }
    func status(_ id: String) -> Status? { if case .success(let event)? = answer(id) { event.status } else { nil } }
    func timedOut(_ id: String) -> Bool { if case .failure(.timedOut)? = answer(id) { true } else { false } }
}

let store0 = WorkerName(.store, 0)
let receipts0 = WorkerName(.receipts, 0)
let receipts1 = WorkerName(.receipts, 1)
