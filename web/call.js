// Voice and video calls in the open room (docs/webclient.md, "Calls"). The
// server keeps the call (docs/api.md, "Calls") and relays `call_signal`s
// between its participants; media goes between the browsers, one
// RTCPeerConnection per other participant. Whoever joins offers to each
// participant already in the call, so two never offer to each other.

const $ = (id) => document.getElementById(id);

export class RoomCalls {
  /**
   * api: the REST client; me: this user's id; names: id → display name;
   * send: a frame onto the room's socket (false when it is not open);
   * report: an error for the user.
   */
  constructor(roomId, { api, me, names, send, report }) {
    Object.assign(this, { roomId, api, me, names, send, report });
    this.call = null;
    this.joined = false;
    this.stream = null;
    this.iceServers = null;
    this.peers = new Map();
    this.closed = false;
    this.render();
    this.loadCurrent();
  }

  /** A call already ringing or running when the room opens. */
  async loadCurrent() {
    try {
      const page = await this.api.get(`/api/chat/rooms/${this.roomId}/calls/?page_size=1`);
      const call = page.results[0];
      if (!this.closed && !this.call && call && !isOver(call)) {
        this.call = call;
        this.render();
      }
    } catch {
      // No call shown: one that starts later arrives as an event.
    }
  }

  async start(media) {
    if (this.call && !isOver(this.call)) return;
    try {
      await this.openMedia(media);
      this.call = await this.api.post(`/api/chat/rooms/${this.roomId}/calls/`, { media });
      this.joined = true;
    } catch (error) {
      this.hangUp();
      this.report(`Cannot start the call: ${error.message}`);
    }
    this.render();
  }

  async join() {
    const call = this.call;
    if (!call || this.joined) return;
    try {
      await this.openMedia(call.media);
      this.call = await this.api.post(`/api/chat/calls/${call.id}/join/`);
      this.joined = true;
      this.render();
      for (const p of this.call.participants) {
        if (p.state === "joined" && p.user_id !== this.me) await this.offer(p.user_id);
      }
    } catch (error) {
      this.hangUp();
      this.report(`Cannot join the call: ${error.message}`);
      this.render();
    }
  }

  async leave() {
    const call = this.call;
    this.hangUp();
    this.render();
    if (!call) return;
    try {
      this.call = await this.api.post(`/api/chat/calls/${call.id}/leave/`);
    } catch (error) {
      this.report(`Leaving the call: ${error.message}`);
    }
    this.render();
  }

  async decline() {
    const call = this.call;
    if (!call) return;
    try {
      this.call = await this.api.post(`/api/chat/calls/${call.id}/decline/`);
      this.declined = call.id;
    } catch (error) {
      this.report(error.message);
    }
    this.render();
  }

  /** `call_started`, `call_joined`, `call_left`, `call_ended` of this room. */
  onEvent(event) {
    const call = event.call;
    if (!call || call.room !== this.roomId) return;
    if (this.call && this.call.id !== call.id && !isOver(this.call)) return;
    this.call = call;
    if (event.type === "call_left" && event.user_id !== this.me) this.closePeer(event.user_id);
    // Ended, or this user is no longer in it (left from another tab, removed): no media.
    const mine = call.participants.find((p) => p.user_id === this.me);
    if (this.joined && (isOver(call) || mine?.state !== "joined")) this.hangUp();
    this.render();
  }

  /** A `call_signal` for this user: an offer, an answer or an ICE candidate. */
  onSignal(event) {
    if (!this.joined || event.call_id !== this.call?.id || typeof event.signal !== "object") return;
    const peer = this.peer(event.from);
    // One signal at a time per peer: an answer or a candidate waits for the description before it.
    peer.queue = peer.queue.then(() => this.apply(peer, event.signal)).catch((error) => this.report(`Call: ${error.message}`));
  }

  async apply(peer, signal) {
    const pc = peer.pc;
    if (signal.type === "offer" || signal.type === "answer") {
      await pc.setRemoteDescription({ type: signal.type, sdp: signal.sdp });
      for (const candidate of peer.candidates.splice(0)) await pc.addIceCandidate(candidate);
      if (signal.type === "offer") {
        await pc.setLocalDescription(await pc.createAnswer());
        this.signal(peer.user, { type: "answer", sdp: pc.localDescription.sdp });
      }
    } else if (signal.type === "candidate" && signal.candidate) {
      if (pc.remoteDescription) await pc.addIceCandidate(signal.candidate);
      else peer.candidates.push(signal.candidate);
    }
  }

  async offer(user) {
    const peer = this.peer(user);
    await peer.pc.setLocalDescription(await peer.pc.createOffer());
    this.signal(user, { type: "offer", sdp: peer.pc.localDescription.sdp });
  }

  signal(to, signal) {
    if (!this.send({ type: "call_signal", call_id: this.call.id, to, signal })) this.report("Call: the connection is down; the other side may not hear you.");
  }

  /** The connection to `user`, made on first use with this side's tracks. */
  peer(user) {
    let peer = this.peers.get(user);
    if (peer) return peer;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers || [] });
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const label = document.createElement("span");
    label.className = "peer-name";
    label.textContent = this.names(user);
    const element = document.createElement("div");
    element.className = "remote-peer";
    element.dataset.userId = user;
    element.dataset.connection = pc.connectionState;
    element.append(video, label);
    $("remote-peers").append(element);
    for (const track of this.stream?.getTracks() ?? []) pc.addTrack(track, this.stream);
    pc.onicecandidate = (event) => { if (event.candidate) this.signal(user, { type: "candidate", candidate: event.candidate.toJSON() }); };
    pc.ontrack = (event) => { if (video.srcObject !== event.streams[0]) video.srcObject = event.streams[0]; };
    pc.onconnectionstatechange = () => { element.dataset.connection = pc.connectionState; };
    peer = { user, pc, element, candidates: [], queue: Promise.resolve() };
    this.peers.set(user, peer);
    return peer;
  }

  closePeer(user) {
    const peer = this.peers.get(user);
    if (!peer) return;
    peer.pc.close();
    peer.element.remove();
    this.peers.delete(user);
  }

  async openMedia(media) {
    if (!this.iceServers) this.iceServers = (await this.api.get("/api/chat/calls/ice_servers/")).ice_servers;
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: media === "video" });
    $("local-video").srcObject = this.stream;
  }

  /** Out of the call on this side: every connection closed, camera and microphone released. */
  hangUp() {
    for (const user of [...this.peers.keys()]) this.closePeer(user);
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    $("local-video").srcObject = null;
    this.joined = false;
  }

  /** The room closes: out of the call, and the server told so. */
  close() {
    this.closed = true;
    const call = this.call;
    const wasIn = this.joined;
    this.hangUp();
    if (wasIn && call && !isOver(call)) this.api.post(`/api/chat/calls/${call.id}/leave/`).catch(() => {});
    $("call-panel").hidden = true;
    for (const id of ["call-audio-button", "call-video-button"]) $(id).disabled = true;
  }

  render() {
    if (this.closed) return;
    const call = this.call;
    const open = Boolean(call && !isOver(call));
    const panel = $("call-panel");
    panel.hidden = !call || (isOver(call) && !this.showEnded(call));
    panel.dataset.state = call?.state ?? "none";
    panel.dataset.joined = String(this.joined);
    if (call) panel.dataset.callId = call.id;
    const joinedCount = call ? call.participants.filter((p) => p.state === "joined").length : 0;
    const kind = call?.media === "video" ? "Video call" : "Call";
    $("call-status").textContent = !call ? ""
      : isOver(call) ? `${kind} ${call.state === "missed" ? "missed" : "ended"}`
      : this.joined ? `${kind}: ${joinedCount} in the call`
      : call.state === "ringing" ? `${kind} from ${this.names(call.started_by)}` : `${kind} in progress (${joinedCount} in it)`;
    $("call-join").hidden = !open || this.joined;
    $("call-decline").hidden = !open || this.joined || call.state !== "ringing" || call.started_by === this.me || this.declined === call.id;
    $("call-leave").hidden = !this.joined;
    for (const id of ["call-audio-button", "call-video-button"]) $(id).disabled = open;
  }

  /** An ended call stays shown a few seconds, then goes. */
  showEnded(call) {
    if (this.endedShown === call.id) return false;
    clearTimeout(this.endedTimer);
    this.endedTimer = setTimeout(() => { this.endedShown = call.id; this.render(); }, 5000);
    return true;
  }
}

function isOver(call) {
  return call.state === "ended" || call.state === "missed";
}
