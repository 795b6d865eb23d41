// One RTCPeerConnection per remote peer, negotiated with the "perfect
// negotiation" pattern: both sides may offer at any time; on a collision the
// polite side rolls back and answers, the impolite side ignores the other's
// offer. Descriptions and ICE candidates travel in the protocol's `data` field
// of offer / answer / candidate messages; `bye` hangs up.

const STATS_INTERVAL_MS = 1000;
const MAX_ICE_RESTARTS = 3;

let iceCache = { servers: null, peerId: null, expires: 0 };

/**
 * ICE servers from `GET /api/ice-servers` (cached for half their ttl), falling
 * back to the list the server gave in `welcome`.
 */
export async function fetchIceServers(fallback = [], peerId = null, token = null) {
  if (iceCache.servers && iceCache.peerId === peerId && Date.now() < iceCache.expires) return iceCache.servers;
  try {
    // Our session token makes the server name us in time-limited TURN
    // credentials (username "<expiry>:<our id>").
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch("/api/ice-servers", { cache: "no-store", headers });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    const servers = Array.isArray(body.ice_servers) ? body.ice_servers : [];
    const ttl = Number.isFinite(body.ttl) && body.ttl > 0 ? body.ttl : 3600;
    iceCache = { servers, peerId, expires: Date.now() + (ttl * 1000) / 2 };
    return servers;
  } catch (err) {
    console.warn(`[call] GET /api/ice-servers failed (${err.message}); using the welcome list`);
    return fallback;
  }
}

export class PeerCall extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.peerId      the remote peer's session id
   * @param {string} o.selfId      our session id (decides who is polite)
   * @param {(type: string, data: any) => void} o.signal  sends offer/answer/candidate/bye to the peer
   * @param {RTCIceServer[]} o.iceServers
   * @param {MediaStream|null} o.localStream
   * @param {string} [o.name]      display name
   * @param {string} [o.role]      host | participant | "" (1:1)
   *
   * Events: "state" (connectionState changed), "track" (remote media),
   *         "closed" ({reason}).
   */
  constructor({ peerId, selfId, signal, iceServers, localStream, name = "", role = "" }) {
    super();
    this.peerId = peerId;
    this.name = name;
    this.role = role;
    this.polite = selfId < peerId;
    this.signal = signal;
    this.localStream = localStream;
    this.remoteStream = new MediaStream();
    this.closed = false;
    this.framesDecoded = 0;
    this.bytesReceived = 0;
    this.iceRestarts = 0;

    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswer = false;
    this._tracksAdded = false;
    this._queue = Promise.resolve(); // signaling messages are handled one at a time
    this._statsTimer = null;

    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    pc.onnegotiationneeded = () => this._negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && !this.closed) this.signal("candidate", candidate.toJSON());
    };
    pc.ontrack = ({ track }) => {
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      this.dispatchEvent(new CustomEvent("track", { detail: { track } }));
    };
    pc.onconnectionstatechange = () => this._onConnectionState();
    this._statsTimer = setInterval(() => this.updateStats(), STATS_INTERVAL_MS);
  }

  get connectionState() {
    return this.closed ? "closed" : this.pc.connectionState;
  }

  /** Start negotiating from this side (we call, or we joined after the peer). */
  start() {
    this._addLocalTracks({ recvOnlyIfNone: true });
  }

  /** Feed one relayed message from this peer: offer, answer, candidate or bye. */
  handle(type, data) {
    this._queue = this._queue
      .then(() => this._handle(type, data))
      .catch((err) => console.warn(`[call ${this.peerId}] ${type} failed:`, err));
    return this._queue;
  }

  /** Hang up; tells the peer with `bye` unless sendBye is false. */
  close(reason = "hangup", { sendBye = true } = {}) {
    if (this.closed) return;
    if (sendBye) this.signal("bye", { reason });
    this.closed = true;
    clearInterval(this._statsTimer);
    this.pc.onnegotiationneeded = this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
    this.pc.close();
    this.dispatchEvent(new CustomEvent("state", { detail: { state: "closed" } }));
    this.dispatchEvent(new CustomEvent("closed", { detail: { reason } }));
  }

  setIceServers(iceServers) {
    if (this.closed) return;
    try { this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers }); } catch { /* keep the old */ }
  }

  /** Refresh framesDecoded / bytesReceived from getStats(). */
  async updateStats() {
    if (this.closed) return;
    try {
      const report = await this.pc.getStats();
      let frames = 0;
      let bytes = 0;
      report.forEach((s) => {
        if (s.type === "inbound-rtp") {
          bytes += s.bytesReceived || 0;
          if (s.kind === "video") frames += s.framesDecoded || 0;
        }
      });
      const changed = frames !== this.framesDecoded;
      this.framesDecoded = frames;
      this.bytesReceived = bytes;
      if (changed) this.dispatchEvent(new CustomEvent("stats"));
    } catch { /* closed meanwhile */ }
  }

  // ---- internals ------------------------------------------------------------

  _addLocalTracks({ recvOnlyIfNone = false } = {}) {
    if (this._tracksAdded || this.closed) return;
    this._tracksAdded = true;
    const tracks = this.localStream ? this.localStream.getTracks() : [];
    for (const track of tracks) this.pc.addTrack(track, this.localStream);
    if (recvOnlyIfNone) {
      // No camera or microphone: still ask for the peer's media.
      const kinds = new Set(tracks.map((t) => t.kind));
      for (const kind of ["audio", "video"]) {
        if (!kinds.has(kind)) this.pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
  }

  async _negotiate() {
    if (this.closed) return;
    try {
      this._makingOffer = true;
      await this.pc.setLocalDescription();
      this.signal(this.pc.localDescription.type, this.pc.localDescription.toJSON());
    } catch (err) {
      console.warn(`[call ${this.peerId}] negotiation failed:`, err);
    } finally {
      this._makingOffer = false;
    }
  }

  async _handle(type, data) {
    if (this.closed) return;
    if (type === "bye") {
      this.close("remote hangup", { sendBye: false });
      return;
    }
    if (type === "candidate") {
      if (!data) return;
      try {
        await this.pc.addIceCandidate(data);
      } catch (err) {
        if (!this._ignoreOffer) throw err; // candidates of an offer we ignored
      }
      return;
    }
    if (type !== "offer" && type !== "answer") return;
    const description = data && typeof data === "object" ? data : null;
    if (!description || (description.type !== "offer" && description.type !== "answer")) return;

    const pc = this.pc;
    const readyForOffer = !this._makingOffer && (pc.signalingState === "stable" || this._settingRemoteAnswer);
    const collision = description.type === "offer" && !readyForOffer;
    this._ignoreOffer = !this.polite && collision;
    if (this._ignoreOffer) return;

    this._settingRemoteAnswer = description.type === "answer";
    try {
      await pc.setRemoteDescription(description); // rolls back our offer if needed
    } finally {
      this._settingRemoteAnswer = false;
    }
    if (description.type === "offer") {
      // Adding our tracks after the remote offer reuses its transceivers, so
      // the answer carries our media and no second round trip is needed.
      this._addLocalTracks();
      await pc.setLocalDescription();
      this.signal(pc.localDescription.type, pc.localDescription.toJSON());
    }
  }

  _onConnectionState() {
    const state = this.pc.connectionState;
    if (state === "failed" && this.iceRestarts < MAX_ICE_RESTARTS) {
      this.iceRestarts++;
      this.pc.restartIce(); // fires negotiationneeded with an ICE-restart offer
    }
    if (state === "connected") this.iceRestarts = 0;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }
}
