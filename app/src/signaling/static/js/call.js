// One RTCPeerConnection per remote peer, negotiated with the "perfect
// negotiation" pattern: both sides may offer at any time; on a collision the
// polite side rolls back and answers, the impolite side ignores the other's
// offer. Descriptions and ICE candidates travel in the protocol's `data` field
// of offer / answer / candidate messages; `bye` hangs up.

const STATS_INTERVAL_MS = 1000;
const MAX_ICE_RESTARTS = 3;
// TURN credentials are fetched again when this share of their ttl has passed, so that a call
// outliving them moves to fresh ones (an ICE restart) long before they expire.
export const ICE_REFRESH_SHARE = 0.5;
// A failed refresh is tried again this much later (still well before the expiry).
const ICE_RETRY_MS = 10000;
// An ICE restart for fresh credentials waits at most this long for `connected`.
const ICE_RESTART_WAIT_MS = 10000;

/**
 * ICE servers from `GET /api/ice-servers`, with their lifetime: `{servers, ttl, fetchedAt,
 * refreshAt, username}` (times in ms since the epoch; username of the TURN entry, "" without
 * TURN). The server names our session in the TURN credential when we show its token; every
 * peer connection of the session shares it (coturn counts its allocations per session).
 * When the request fails: the list the server gave in `welcome`, refreshed sooner.
 */
export async function fetchIceServers(fallback = [], token = null) {
  const fetchedAt = Date.now();
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch("/api/ice-servers", { cache: "no-store", headers });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    const servers = Array.isArray(body.ice_servers) ? body.ice_servers : [];
    const ttl = Number.isFinite(body.ttl) && body.ttl > 0 ? body.ttl : 3600;
    return { servers, ttl, fetchedAt, refreshAt: fetchedAt + ttl * 1000 * ICE_REFRESH_SHARE, username: turnUsername(servers) };
  } catch (err) {
    console.warn(`[call] GET /api/ice-servers failed (${err.message}); using the welcome list`);
    return { servers: fallback, ttl: 0, fetchedAt, refreshAt: fetchedAt + ICE_RETRY_MS, username: turnUsername(fallback) };
  }
}

function turnUsername(servers) {
  return servers.find((s) => s && s.username)?.username || "";
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
   * @param {boolean} [o.relayOnly] gather relay candidates only (iceTransportPolicy "relay")
   *
   * Events: "state" (connectionState changed), "track" (remote media),
   *         "stats" (frames or the selected candidate's type changed),
   *         "iceerror" ({code, text, url}: a STUN/TURN server refused us), "closed" ({reason}).
   */
  constructor({ peerId, selfId, signal, iceServers, localStream, name = "", role = "", relayOnly = false }) {
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
    this.localCandidateType = ""; // host | srflx | prflx | relay of the selected pair
    this.credentialRestarts = 0;  // ICE restarts made to use fresh TURN credentials

    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswer = false;
    this._tracksAdded = false;
    this._queue = Promise.resolve(); // signaling messages are handled one at a time
    this._statsTimer = null;

    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? "relay" : "all" });
    this.pc = pc;
    pc.onicecandidateerror = ({ errorCode, errorText, url }) => {
      this.dispatchEvent(new CustomEvent("iceerror", { detail: { code: errorCode, text: errorText, url } }));
    };
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
    this.pc.onicecandidateerror = null;
    this.pc.close();
    this.dispatchEvent(new CustomEvent("state", { detail: { state: "closed" } }));
    this.dispatchEvent(new CustomEvent("closed", { detail: { reason } }));
  }

  /**
   * Use fresh ICE servers (new TURN credentials) from now on. Candidates already gathered keep
   * the old credentials, so a connected call restarts ICE to gather with the new ones (its media
   * goes on over the old path meanwhile). Resolves once connected again, or after a while.
   */
  async setIceServers(iceServers) {
    if (this.closed) return false;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (err) {
      console.warn(`[call ${this.peerId}] new ICE servers refused:`, err);
      return false;
    }
    if (this.pc.remoteDescription === null) return true; // nothing gathered yet: the first offer uses them
    const before = this.localUfrag();
    this.credentialRestarts++;
    this.pc.restartIce(); // fires negotiationneeded with an ICE-restart offer
    // Done when the restart's offer/answer is through and its candidates are gathered.
    const deadline = Date.now() + ICE_RESTART_WAIT_MS;
    while (!this.closed && Date.now() < deadline) {
      const pc = this.pc;
      if (this.localUfrag() !== before && pc.signalingState === "stable" && pc.iceGatheringState === "complete") break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return true;
  }

  /** The ICE username fragment of our current local description ("" before the first). */
  localUfrag() {
    return /a=ice-ufrag:(\S+)/.exec(this.pc.localDescription?.sdp || "")?.[1] || "";
  }

  /** Refresh framesDecoded / bytesReceived / localCandidateType from getStats(). */
  async updateStats() {
    if (this.closed) return;
    try {
      const report = await this.pc.getStats();
      let frames = 0;
      let bytes = 0;
      let pairId = "";
      report.forEach((s) => {
        if (s.type === "inbound-rtp") {
          bytes += s.bytesReceived || 0;
          if (s.kind === "video") frames += s.framesDecoded || 0;
        }
        if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      const pair = pairId ? report.get(pairId) : null;
      const type = (pair && report.get(pair.localCandidateId)?.candidateType) || "";
      const changed = frames !== this.framesDecoded || type !== this.localCandidateType;
      this.framesDecoded = frames;
      this.bytesReceived = bytes;
      this.localCandidateType = type;
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
