// Signaling transport for webrtc-edge (wire protocol v1, docs/protocol.md).
//
// One Signaling object owns one server session. It speaks WebSocket (`/ws`)
// and falls back to HTTP long-polling (`/api/sessions...`) when the WebSocket
// cannot be opened. After a drop it resumes the same session
// (`/ws?resume=<token>&ack=<seq>`), so the id, room and role survive and no
// message is lost; messages sent while disconnected wait in an outbox.
//
// Events (all CustomEvent, payload in `detail`):
//   "state"        {state, transport}   idle|connecting|open|reconnecting|closed
//   "welcome"      the welcome fields + {transport, fresh, replaced}
//                  fresh: a new session (not a resume); replaced: a new session
//                  that replaces a lost one (new id: calls and rooms are gone)
//   "message"      one server message (never `welcome`), in `seq` order, once
//   "session-lost" {reason}  the old session is gone; a new one is being made
//   "lost"         {lost}    polling: that many queued messages were pushed out

const OPEN_TIMEOUT_MS = 6000;     // WebSocket must open and send `welcome` within this
const BACKOFF_MIN_MS = 400;
const BACKOFF_MAX_MS = 15000;
const POLL_WAIT_S = 25;           // long-poll `wait` (protocol: 0..30)
const POLL_GRACE_MS = 15000;      // client-side abort if a poll hangs past wait + this
const ACK_DELAY_MS = 1500;        // WebSocket: batch `ack` messages
const MAX_BATCH_BYTES = 60 * 1024; // polling: bytes per POST body
const MAX_BATCH_COUNT = 32;       // polling: messages per POST body

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Exponential backoff with +-25 % jitter. */
export function backoffDelay(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.max(0, attempt));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

class ConnectError extends Error {
  constructor(message, { code = 0, refused = false } = {}) {
    super(message);
    this.code = code;       // WebSocket close code, or HTTP status
    this.refused = refused; // the server said the token is no good (4401 / 401)
  }
}

export class Signaling extends EventTarget {
  /**
   * @param {object} [options]
   * @param {"auto"|"websocket"|"polling"} [options.transport] "auto": WebSocket,
   *        long-polling when the WebSocket fails to open.
   * @param {string} [options.base] origin/base URL of the server (default: this page).
   */
  constructor({ transport = "auto", base = location.href } = {}) {
    super();
    this.preferred = ["auto", "websocket", "polling"].includes(transport) ? transport : "auto";
    this.base = base;
    this.state = "idle";
    this.transport = null;     // "websocket" | "polling" once connected
    this.id = null;
    this.token = null;
    this.heartbeat = 30;
    this.resumeWindow = 60;
    this.iceServers = [];
    this.lastSeq = 0;          // highest seq processed
    this.stats = { connects: 0, resumes: 0, fallbacks: 0, drops: 0, lost: 0, sessions: 0 };

    this._wanted = false;      // connect() called and close() not called
    this._outbox = [];         // messages waiting for a connection
    this._msgId = 0;
    this._attempt = 0;         // reconnect attempt counter (backoff)
    this._droppedAt = 0;       // when the current outage started
    this._ws = null;
    this._ackedSeq = 0;
    this._ackTimer = null;
    this._pingTimer = null;
    this._lastRx = 0;
    this._pollGen = 0;         // bumping it stops the running poll loop
    this._pollAbort = null;
    this._flushing = false;
  }

  // ---- public API -------------------------------------------------------

  /** Start (once). Resolves with the first welcome. */
  connect() {
    if (this._wanted) return this._firstWelcome;
    this._wanted = true;
    this._firstWelcome = new Promise((resolve) => {
      const onWelcome = (ev) => { this.removeEventListener("welcome", onWelcome); resolve(ev.detail); };
      this.addEventListener("welcome", onWelcome);
    });
    this._startSession();
    return this._firstWelcome;
  }

  /**
   * Send one client message. Adds a numeric `id` (echoed as `ref` in replies
   * and errors) unless the message has one; returns that id. Messages sent
   * while disconnected are queued and sent, in order, after the resume.
   */
  send(message) {
    const msg = { ...message };
    if (msg.id === undefined && msg.type !== "ack") msg.id = ++this._msgId;
    this._outbox.push(msg);
    this._flush();
    return msg.id;
  }

  /** Leave for good: close the WebSocket (1000) or DELETE the polling session. */
  close() {
    if (!this._wanted) return;
    this._wanted = false;
    this._stopTimers();
    this._flush(); // last words (bye, leave) go out before the close
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      this._detach(ws);
      try { ws.close(1000, "bye"); } catch { /* already closed */ }
    }
    if (this.transport === "polling" && this.id) {
      this._pollGen++;
      this._pollAbort?.abort();
      if (this._outbox.length) {
        fetch(this._url(`/api/sessions/${encodeURIComponent(this.id)}/messages`), {
          method: "POST", headers: this._authHeaders({ "Content-Type": "application/json" }),
          body: JSON.stringify(takeBatch(this._outbox)), keepalive: true,
        }).catch(() => {});
      }
      fetch(this._url(`/api/sessions/${encodeURIComponent(this.id)}`), {
        method: "DELETE", headers: this._authHeaders(), keepalive: true,
      }).catch(() => {});
    }
    this._setState("closed");
  }

  /**
   * Test hook: simulate a network drop. WebSocket: the socket is closed with
   * 4000 and the client resumes. Polling: the running poll is aborted (its
   * answer is lost) and the client polls again with the same `ack`.
   */
  simulateDrop() {
    if (this.transport === "websocket" && this._ws) {
      this._abandonSocket(this._ws, { code: 4000, reason: "simulated drop" });
    } else if (this.transport === "polling") {
      this._pollAbort?.abort(new DOMException("simulated drop", "AbortError"));
    }
  }

  // ---- session start, fallback, resume -----------------------------------

  _order() {
    if (this.preferred === "polling") return ["polling"];
    if (this.preferred === "websocket") return ["websocket"];
    return ["websocket", "polling"];
  }

  /** Make a new session, trying the transports in order, with backoff. */
  async _startSession() {
    this._setState(this.id ? "reconnecting" : "connecting");
    while (this._wanted) {
      for (const kind of this._order()) {
        if (!this._wanted) return;
        try {
          if (kind === "websocket") {
            const { ws, welcome } = await this._openSocket(null);
            if (!this._wanted) { ws.close(1000); return; }
            this._adoptSocket(ws, welcome);
          } else {
            const welcome = await this._openPolling();
            if (!this._wanted) return;
            this._adoptPolling(welcome);
          }
          return;
        } catch (err) {
          if (kind === "websocket" && this._order().length > 1) {
            this.stats.fallbacks++;
            console.info(`[signaling] WebSocket failed (${err.message}); falling back to long-polling`);
          } else {
            console.info(`[signaling] ${kind} failed: ${err.message}`);
          }
        }
      }
      await sleep(backoffDelay(this._attempt++));
    }
  }

  /** The old session is gone (token refused or resume window over): start anew. */
  _sessionLost(reason) {
    if (!this._wanted) return;
    console.warn(`[signaling] session lost: ${reason}`);
    this._stopTimers();
    this._pollGen++;
    this._pollAbort?.abort();
    if (this._ws) { const ws = this._ws; this._ws = null; this._detach(ws); try { ws.close(1000); } catch { /* gone */ } }
    this._outbox = [];  // addressed to the old world (peer ids, room state)
    this.dispatchEvent(new CustomEvent("session-lost", { detail: { reason, id: this.id } }));
    this._startSession();
  }

  _resumeWindowOver() {
    return this._droppedAt && Date.now() - this._droppedAt > this.resumeWindow * 1000;
  }

  _onWelcome(welcome, transport) {
    const fresh = !welcome.resumed;
    const replaced = fresh && this.id !== null && this.id !== welcome.id;
    if (fresh) {
      this.lastSeq = 0;
      this._ackedSeq = 0;
      this.stats.sessions++;
    } else {
      this.stats.resumes++;
      if (welcome.lost) this.stats.lost += welcome.lost;
    }
    this.id = welcome.id;
    if (welcome.token) this.token = welcome.token;
    if (Number.isFinite(welcome.heartbeat) && welcome.heartbeat > 0) this.heartbeat = welcome.heartbeat;
    if (Number.isFinite(welcome.resume) && welcome.resume >= 0) this.resumeWindow = welcome.resume;
    if (Array.isArray(welcome.ice_servers)) this.iceServers = welcome.ice_servers;
    this.transport = transport;
    this.stats.connects++;
    this._attempt = 0;
    this._droppedAt = 0;
    this._setState("open");
    const { token: _secret, ...visible } = welcome; // never hand the token around
    this.dispatchEvent(new CustomEvent("welcome", { detail: { ...visible, transport, fresh, replaced } }));
    this._flush();
  }

  // ---- WebSocket ------------------------------------------------------------

  _socketUrl(resume) {
    const url = new URL("/ws", this.base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (resume) {
      url.searchParams.set("resume", this.token);
      url.searchParams.set("ack", String(this.lastSeq));
    }
    return url.href;
  }

  /** Open a WebSocket and wait for `welcome`. Rejects with ConnectError. */
  _openSocket(resume) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this._socketUrl(resume));
      } catch (err) {
        reject(new ConnectError(`cannot open WebSocket: ${err.message}`));
        return;
      }
      let refused = false;
      const timer = setTimeout(() => {
        this._detach(ws);
        try { ws.close(); } catch { /* not open */ }
        reject(new ConnectError("no welcome in time"));
      }, OPEN_TIMEOUT_MS);
      ws.onmessage = (ev) => {
        const msg = parseFrame(ev.data);
        if (!msg) return;
        if (msg.type === "welcome") {
          clearTimeout(timer);
          this._detach(ws);
          resolve({ ws, welcome: msg });
        } else if (msg.type === "error" && msg.code === "unauthorized") {
          refused = true;
        }
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        this._detach(ws);
        reject(new ConnectError(`closed before welcome (code ${ev.code})`, {
          code: ev.code, refused: refused || ev.code === 4401,
        }));
      };
      ws.onerror = () => { /* a close event follows */ };
    });
  }

  _adoptSocket(ws, welcome) {
    this._ws = ws;
    this._lastRx = Date.now();
    ws.onmessage = (ev) => {
      this._lastRx = Date.now();
      const msg = parseFrame(ev.data);
      if (msg) this._deliver(msg);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._onSocketDropped(ev.code, ev.reason);
    };
    ws.onerror = () => {};
    this._onWelcome(welcome, "websocket");
    this._startHeartbeat();
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  /** Give up on a socket at once (a dead TCP connection may take long to close). */
  _abandonSocket(ws, { code, reason }) {
    if (this._ws !== ws) return;
    this._ws = null;
    this._detach(ws);
    try { ws.close(code >= 3000 ? code : 4000, reason); } catch { /* gone */ }
    this._onSocketDropped(code, reason);
  }

  _onSocketDropped(code, reason) {
    this._stopTimers();
    if (!this._wanted) { this._setState("closed"); return; }
    this.stats.drops++;
    console.info(`[signaling] WebSocket dropped (code ${code}${reason ? `, ${reason}` : ""}); resuming`);
    if (code === 4401) { this._sessionLost("resume refused"); return; }
    this._droppedAt = this._droppedAt || Date.now();
    this._setState("reconnecting");
    // 1001: the instance is going away; resume elsewhere right away.
    const delay = code === 1001 ? Math.random() * 250 : backoffDelay(this._attempt++);
    setTimeout(() => this._resumeSocket(), delay);
  }

  async _resumeSocket() {
    while (this._wanted && !this._ws) {
      if (this._resumeWindowOver()) { this._sessionLost("resume window over"); return; }
      try {
        const { ws, welcome } = await this._openSocket(true);
        if (!this._wanted) { this._detach(ws); ws.close(1000); return; }
        if (welcome.resumed === false && welcome.id !== this.id) {
          // The server made a new session instead of resuming.
          this._outbox = [];
          this.dispatchEvent(new CustomEvent("session-lost", { detail: { reason: "not resumed", id: this.id } }));
        }
        this._adoptSocket(ws, welcome);
        return;
      } catch (err) {
        if (err.refused) { this._sessionLost("resume refused"); return; }
        console.info(`[signaling] resume failed: ${err.message}`);
        // WebSockets may have stopped working on this network: the same
        // session can be carried on over long-polling with its token.
        if (this.preferred === "auto" && this._attempt >= 2 && await this._resumePolling()) return;
        await sleep(backoffDelay(this._attempt++));
      }
    }
  }

  /** Carry the current session on over long-polling. Resolves true on success. */
  async _resumePolling() {
    if (!this._wanted || this._ws) return false;
    let res;
    try {
      res = await fetch(this._url(`/api/sessions/${encodeURIComponent(this.id)}/messages?wait=0&ack=${this.lastSeq}`), {
        headers: this._authHeaders(), cache: "no-store",
      });
    } catch {
      return false;
    }
    if (res.status === 401) { this._sessionLost("resume refused"); return true; }
    if (!res.ok || !this._wanted || this._ws) return false;
    const messages = await res.json().catch(() => null);
    if (!Array.isArray(messages)) return false;
    this.stats.fallbacks++;
    console.info("[signaling] WebSocket resume failed; carrying on over long-polling");
    const lost = Number(res.headers.get("Signaling-Lost")) || 0;
    const gen = ++this._pollGen;
    this._onWelcome({
      type: "welcome", id: this.id, resumed: true, lost,
      heartbeat: this.heartbeat, resume: this.resumeWindow, ice_servers: this.iceServers,
    }, "polling");
    for (const msg of messages) this._deliver(msg);
    this._pollLoop(gen);
    return true;
  }

  _startHeartbeat() {
    clearInterval(this._pingTimer);
    // Browsers answer the server's WebSocket pings by themselves, but JS cannot
    // see them; an application ping lets us notice a dead connection too.
    const every = Math.max(5, Math.min(this.heartbeat, 30)) * 1000;
    this._pingTimer = setInterval(() => {
      const ws = this._ws;
      if (!ws) return;
      // Generous: background tabs may run this timer only once a minute.
      if (Date.now() - this._lastRx > every * 2 + 30000) {
        this._abandonSocket(ws, { code: 4000, reason: "heartbeat timeout" });
        return;
      }
      this._sendNow({ type: "ping" });
    }, every);
  }

  _stopTimers() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
  }

  _scheduleAck() {
    if (this.transport !== "websocket" || this._ackTimer) return;
    this._ackTimer = setTimeout(() => {
      this._ackTimer = null;
      if (this._ws && this.lastSeq > this._ackedSeq) {
        this._ackedSeq = this.lastSeq;
        this._sendNow({ type: "ack", seq: this.lastSeq });
      }
    }, ACK_DELAY_MS);
  }

  /** WebSocket only: send now if open, bypassing the outbox (ping, ack). */
  _sendNow(msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(msg));
  }

  // ---- long-polling -----------------------------------------------------------

  _url(path) {
    return new URL(path, this.base).href;
  }

  _authHeaders(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  async _openPolling() {
    let res;
    try {
      res = await fetch(this._url("/api/sessions"), {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}", cache: "no-store",
      });
    } catch (err) {
      throw new ConnectError(`POST /api/sessions failed: ${err.message}`);
    }
    if (res.status !== 201 && res.status !== 200) throw new ConnectError(`POST /api/sessions: HTTP ${res.status}`, { code: res.status });
    const welcome = await res.json();
    if (!welcome || typeof welcome.id !== "string" || typeof welcome.token !== "string") {
      throw new ConnectError("POST /api/sessions: malformed answer");
    }
    return welcome;
  }

  _adoptPolling(welcome) {
    const gen = ++this._pollGen; // before _onWelcome, whose flush runs under this generation
    this._onWelcome({ type: "welcome", ...welcome }, "polling");
    this._pollLoop(gen);
  }

  async _pollLoop(gen) {
    let failures = 0;
    while (this._wanted && gen === this._pollGen) {
      const ctrl = new AbortController();
      this._pollAbort = ctrl;
      const guard = setTimeout(() => ctrl.abort(), POLL_WAIT_S * 1000 + POLL_GRACE_MS);
      const url = this._url(`/api/sessions/${encodeURIComponent(this.id)}/messages?wait=${POLL_WAIT_S}&ack=${this.lastSeq}`);
      try {
        const res = await fetch(url, { headers: this._authHeaders(), signal: ctrl.signal, cache: "no-store" });
        if (gen !== this._pollGen) return;
        if (res.status === 401) { this._sessionLost("polling session expired"); return; }
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const messages = await res.json();
        if (gen !== this._pollGen) return;
        const lost = Number(res.headers.get("Signaling-Lost")) || 0;
        if (lost) {
          this.stats.lost += lost;
          this.dispatchEvent(new CustomEvent("lost", { detail: { lost } }));
        }
        failures = 0;
        this._droppedAt = 0;
        if (this.state !== "open") { this._setState("open"); this._flush(); }
        if (Array.isArray(messages)) for (const msg of messages) this._deliver(msg);
      } catch (err) {
        if (gen !== this._pollGen || !this._wanted) return;
        // A lost answer is fetched again: the next poll repeats the same ack.
        this.stats.drops++;
        this._droppedAt = this._droppedAt || Date.now();
        if (this.state === "open" && err.name !== "AbortError") this._setState("reconnecting");
        if (err.name !== "AbortError" || failures > 0) await sleep(backoffDelay(failures));
        failures++;
      } finally {
        clearTimeout(guard);
      }
    }
  }

  /** Polling: POST the outbox in order, in batches, retrying what failed. */
  async _flushPolling() {
    if (this._flushing) return;
    this._flushing = true;
    const gen = this._pollGen;
    let failures = 0;
    try {
      while (this._outbox.length && this._wanted && gen === this._pollGen && this.transport === "polling") {
        const batch = takeBatch(this._outbox);
        let res;
        try {
          res = await fetch(this._url(`/api/sessions/${encodeURIComponent(this.id)}/messages`), {
            method: "POST",
            headers: this._authHeaders({ "Content-Type": "application/json" }),
            body: JSON.stringify(batch),
            cache: "no-store",
          });
        } catch {
          res = null;
        }
        if (gen !== this._pollGen) return;
        if (res && res.ok) { failures = 0; continue; }
        if (res && res.status === 401) { this._sessionLost("polling session expired"); return; }
        if (res && (res.status === 400 || res.status === 413)) {
          // Refused for good; report it like the WebSocket would.
          const body = await res.json().catch(() => ({}));
          this._deliverLocal({ type: "error", code: body.code || "bad-message", message: body.message || `HTTP ${res.status}`, ref: batch[0]?.id });
          continue;
        }
        // 429, 5xx or network: put the batch back and retry later.
        this._outbox.unshift(...batch);
        await sleep(res && res.status === 429 ? 1000 + backoffDelay(failures) : backoffDelay(failures));
        failures++;
      }
    } finally {
      this._flushing = false;
    }
  }

  // ---- common -------------------------------------------------------------------

  _flush() {
    if (this.state !== "open") return;
    if (this.transport === "websocket") {
      const ws = this._ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      while (this._outbox.length) ws.send(JSON.stringify(this._outbox.shift()));
    } else if (this.transport === "polling") {
      this._flushPolling();
    }
  }

  _deliver(msg) {
    if (!msg || typeof msg !== "object" || msg.type === "welcome") return;
    if (Number.isInteger(msg.seq)) {
      if (msg.seq <= this.lastSeq) return; // replayed twice (resume, poll retry)
      this.lastSeq = msg.seq;
      this._scheduleAck();
    }
    this._deliverLocal(msg);
  }

  _deliverLocal(msg) {
    try {
      this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    } catch (err) {
      console.error("[signaling] message handler failed", err);
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, transport: this.transport } }));
  }
}

function parseFrame(data) {
  if (typeof data !== "string") return null;
  try {
    const msg = JSON.parse(data);
    return msg && typeof msg === "object" && !Array.isArray(msg) ? msg : null;
  } catch {
    return null;
  }
}

function takeBatch(outbox) {
  const batch = [];
  let bytes = 2;
  while (outbox.length && batch.length < MAX_BATCH_COUNT) {
    const size = JSON.stringify(outbox[0]).length + 1;
    if (batch.length && bytes + size > MAX_BATCH_BYTES) break;
    batch.push(outbox.shift());
    bytes += size;
  }
  return batch;
}
