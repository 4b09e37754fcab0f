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
    // Between the click on Call or Join and the server's answer: the
    // buttons are off, and signals for the call are taken (an offer from
    // someone who joins meanwhile must not be lost).
    this.busy = false;
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
    if (this.busy || this.joined || (this.call && !isOver(this.call))) return;
    this.busy = true;
    this.render();
    try {
      await this.openMedia(media);
      const call = await this.api.post(`/api/chat/rooms/${this.roomId}/calls/`, { media });
      if (this.closedMeanwhile(call)) return;
      this.call = call;
      this.joined = true;
    } catch (error) {
      this.hangUp();
      if (!this.closed) this.report(`Cannot start the call: ${error.message}`);
    } finally {
      this.busy = false;
      this.render();
    }
  }

  async join() {
    const call = this.call;
    if (!call || this.joined || this.busy) return;
    this.busy = true;
    this.render();
    try {
      await this.openMedia(call.media);
      const joined = await this.api.post(`/api/chat/calls/${call.id}/join/`);
      if (this.closedMeanwhile(joined)) return;
      this.call = joined;
      this.joined = true;
      this.busy = false;
      this.render();
      for (const p of joined.participants) {
        if (p.state === "joined" && p.user_id !== this.me && !this.peers.has(p.user_id)) await this.offer(p.user_id);
      }
    } catch (error) {
      this.hangUp();
      if (!this.closed) this.report(`Cannot join the call: ${error.message}`);
    } finally {
      this.busy = false;
      this.render();
    }
  }

  /** The room closed while a start or join was under way: out of that call again. */
  closedMeanwhile(call) {
    if (!this.closed) return false;
    this.hangUp();
    this.api.post(`/api/chat/calls/${call.id}/leave/`).catch(() => {});
    return true;
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
    // Ended, or this user left (from another tab, or removed from the room):
    // no media. Not on any event that shows this user out of the call: one
    // from before this side's join can arrive after the join's answer.
    if (this.joined && (isOver(call) || (event.type === "call_left" && event.user_id === this.me))) this.hangUp();
    this.render();
  }

  /** A `call_signal` for this user: an offer, an answer or an ICE candidate. */
  onSignal(event) {
    if (!(this.joined || this.busy) || !this.stream || event.call_id !== this.call?.id || !event.signal || typeof event.signal !== "object") return;
    let peer = this.peers.get(event.from);
    // An offer to a connection that already has one: the other side
    // reloaded and joined again. Its old connection is of no use.
    if (event.signal.type === "offer" && peer && (peer.pc.remoteDescription || peer.pc.localDescription)) this.closePeer(event.from);
    peer = this.peer(event.from);
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
    if (this.closed) return;
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
    pc.onconnectionstatechange = () => {
      element.dataset.connection = pc.connectionState;
      // Gone for good (the other side vanished without leaving): an offer when it joins again makes a new one.
      if (pc.connectionState === "failed") this.closePeer(user);
    };
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
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: media === "video" });
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = stream;
    // The room closed while the browser asked for the camera: not shown in the next room's panel.
    if (this.closed) throw new Error("the room was closed");
    $("local-video").srcObject = stream;
  }

  /** Out of the call on this side: every connection closed, camera and microphone released. */
  hangUp() {
    for (const user of [...this.peers.keys()]) this.closePeer(user);
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    $("local-video").srcObject = null;
    this.joined = false;
  }

  /**
   * The page goes away (reload, tab closed) while in a call: leave it, in a
   * request that outlives the page, or the others would wait on someone
   * who is gone.
   */
  leaveOnUnload() {
    if (!this.joined || !this.call || isOver(this.call)) return;
    fetch(`/api/chat/calls/${this.call.id}/leave/`, { method: "POST", keepalive: true, headers: this.api.headers() }).catch(() => {});
  }

  /** The room closes: out of the call, and the server told so. */
  close() {
    this.closed = true;
    clearTimeout(this.endedTimer);
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
    $("call-join").disabled = this.busy;
    $("call-decline").hidden = !open || this.joined || call.state !== "ringing" || call.started_by === this.me || this.declined === call.id;
    $("call-leave").hidden = !this.joined;
    for (const id of ["call-audio-button", "call-video-button"]) $(id).disabled = open || this.busy;
  }

  /** An ended call stays shown 5 s, then goes. */
  showEnded(call) {
    if (this.endedShown === call.id) return false;
    if (this.endedTimerFor !== call.id) {
      this.endedTimerFor = call.id;
      clearTimeout(this.endedTimer);
      this.endedTimer = setTimeout(() => { this.endedShown = call.id; this.render(); }, 5000);
    }
    return true;
  }
}

function isOver(call) {
  return call.state === "ended" || call.state === "missed";
}
