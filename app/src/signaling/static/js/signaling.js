// Signaling transport for webrtc-edge (wire protocol v1, docs/protocol.md).
//
// One Signaling object owns one server session. It speaks WebSocket (`/ws`)
// and falls back to HTTP long-polling (`/api/sessions...`) when the WebSocket
// cannot be opened. After a drop it resumes the same session
// (`/ws?resume=<token>&ack=<seq>`), so the id, room and role survive and no
// message from the server is lost.
//
// Sending is exactly-once too ("Reliable sending" in docs/protocol.md): send()
// numbers each message with `cseq` (1, 2, 3... per session, across resumes and
// transports) and keeps it until a `received` covers it (in a `pong`, a
// resumed `welcome`, a polling `202`). The server handles each `cseq` once and
// in order, so what is kept can always be sent again, and is, in order: after
// a resume (what the welcome's `received` does not cover), after a polling
// POST that failed or got 5xx/429 (the same batch), and when the server
// skipped something: an `unavailable`, `out-of-order` or `rate-limited` error
// (the client pings 200 ms later), or a pong whose `received` is below the
// highest `cseq` written before its ping. While messages are unconfirmed on a
// WebSocket, a `ping` every second gets them confirmed. What is kept goes at
// a pace (Pace: a token bucket half the server's), so a long outage's backlog
// is never dropped for flooding. Messages sent while
// disconnected are kept the same way; a new session drops them (they were
// addressed to the old one) and counts from 1 again.
//
// Events (all CustomEvent, payload in `detail`):
//   "state"        {state, transport}   idle|connecting|open|reconnecting|closed
//   "welcome"      the welcome fields + {transport, fresh, replaced}
//                  fresh: a new session (not a resume); replaced: a new session
//                  that replaces a lost one (new id: calls and rooms are gone)
//   "message"      one server message (never `welcome`), in `seq` order, once
//   "session-lost" {reason}  the old session is gone; a new one is being made
//   "lost"         {lost}    polling: that many queued messages were pushed out
//
// `unconfirmed`: how many sent messages the server has not confirmed yet.

const OPEN_TIMEOUT_MS = 6000;     // WebSocket must open and send `welcome` within this
const BACKOFF_MIN_MS = 400;
const BACKOFF_MAX_MS = 15000;
const POLL_WAIT_S = 25;           // long-poll `wait` (protocol: 0..30)
const POLL_GRACE_MS = 15000;      // client-side abort if a poll hangs past wait + this
const ACK_DELAY_MS = 1500;        // WebSocket: batch `ack` messages
const MAX_BATCH_BYTES = 60 * 1024; // polling: bytes per POST body
const MAX_BATCH_COUNT = 32;       // polling: messages per POST body
const MAX_MESSAGE_BYTES = 64 * 1024; // the server's `max_message_size` (protocol default)
const CONFIRM_EVERY_MS = 1000;    // WebSocket: ping this often while messages are unconfirmed
const RESYNC_DELAY_MS = 200;      // after an error that says a message was not handled

/** Error codes that say a message was not handled; the client sends it again by itself. */
export const RESENT_CODES = new Set(["unavailable", "out-of-order", "rate-limited"]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A token bucket of our own, half the server's (`rate_limit` in `welcome`;
 * protocol: "Sending at a pace"): what goes at its pace is never dropped for
 * flooding, however much was kept during an outage.
 */
export class Pace {
  constructor({ rate = 50, burst = 100 } = {}) {
    this.rate = 0.9 * (rate > 0 ? rate : 50); // room for the pings and acks, which count too
    this.size = Math.max(1, (burst > 0 ? burst : 100) / 2);
    this.tokens = this.size;
    this.at = performance.now();
  }

  _refill() {
    const now = performance.now();
    this.tokens = Math.min(this.size, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
  }

  /** Take `n` tokens if there are; true when taken. */
  take(n = 1) {
    this._refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Milliseconds until `n` tokens (at most `size`) are there. */
  wait(n = 1) {
    this._refill();
    return Math.max(0, Math.ceil(((Math.min(n, this.size) - this.tokens) / this.rate) * 1000));
  }
}

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
    this.stats = { connects: 0, resumes: 0, fallbacks: 0, drops: 0, lost: 0, sessions: 0, resent: 0 };

    this._wanted = false;      // connect() called and close() not called
    this._kept = [];           // {cseq, id, text, sent}: sent or to send, not confirmed yet, in cseq order
    this._cseq = 0;            // last cseq given out in this session
    this._written = 0;         // WebSocket: highest cseq written in this round
    this._round = 0;           // WebSocket: bumped when everything kept is written again
    this._msgId = 0;
    this._attempt = 0;         // reconnect attempt counter (backoff)
    this._droppedAt = 0;       // when the current outage started
    this._ws = null;
    this._ackedSeq = 0;
    this._ackTimer = null;
    this._pingTimer = null;
    this._confirmTimer = null;
    this._resyncTimer = null;
    this._lastRx = 0;
    this._pollGen = 0;         // bumping it stops the running poll loop
    this._pollAbort = null;
    this._flushing = false;
    this._pace = new Pace();
    this._paceTimer = null;    // WebSocket: a flush waiting for the pace
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
   * Send one client message, exactly once and in order. Adds a numeric `id`
   * (echoed as `ref` in replies and errors) unless the message has one, and
   * the next `cseq`; returns the id. The message is kept until the server
   * confirms it, and sent again when it may not have been handled; messages
   * sent while disconnected go out, in order, after the resume. One larger
   * than the server takes is not sent: a local `too-large` error reports it.
   */
  send(message) {
    const msg = { ...message };
    if (msg.id === undefined && msg.type !== "ack") msg.id = ++this._msgId;
    const text = JSON.stringify({ ...msg, cseq: this._cseq + 1 });
    if (new TextEncoder().encode(text).length > MAX_MESSAGE_BYTES) {
      // The server would refuse it without counting its cseq, and every
      // later message would wait behind it.
      const message = `message is larger than ${MAX_MESSAGE_BYTES} bytes`;
      this._deliverLocal({ type: "error", code: "too-large", message, ref: msg.id });
      return msg.id;
    }
    this._kept.push({ cseq: ++this._cseq, id: msg.id, text, sent: false });
    this._flush();
    return msg.id;
  }

  /** How many sent messages the server has not confirmed yet. */
  get unconfirmed() {
    return this._kept.length;
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
      if (this._kept.length) this._post(takeBatch(this._kept), { keepalive: true }).catch(() => {});
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
    this._forgetSends();
    this.dispatchEvent(new CustomEvent("session-lost", { detail: { reason, id: this.id } }));
    this._startSession();
  }

  /** A new session: what was kept is addressed to the old world (peer ids, room state); count from 1. */
  _forgetSends() {
    this._kept = [];
    this._cseq = 0;
    this._written = 0;
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
    if (welcome.rate_limit && typeof welcome.rate_limit === "object") this._pace = new Pace(welcome.rate_limit);
    this.transport = transport;
    this.stats.connects++;
    this._attempt = 0;
    this._droppedAt = 0;
    // A new connection: forget what the server handled; the rest goes (again), in order.
    this._confirm(welcome.received);
    this._rewind();
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
          this._forgetSends();
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
      this._ping();
    }, every);
  }

  _stopTimers() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    for (const name of ["_ackTimer", "_confirmTimer", "_resyncTimer", "_paceTimer"]) {
      clearTimeout(this[name]);
      this[name] = null;
    }
  }

  /**
   * WebSocket: ping; its id names the round and the highest cseq written
   * before it. The server reads a socket in order, so when the pong's
   * `received` is below that, something written was not handled (see _onPong).
   */
  _ping() {
    this._sendNow({ type: "ping", id: `sync-${this._round}-${this._written}` });
  }

  /** WebSocket: while messages are unconfirmed, ping every CONFIRM_EVERY_MS. */
  _armConfirm() {
    if (this._confirmTimer || !this._kept.length || !this._wanted || this.transport !== "websocket") return;
    this._confirmTimer = setTimeout(() => {
      this._confirmTimer = null;
      if (!this._kept.length) return;
      this._ping();
      this._armConfirm();
    }, CONFIRM_EVERY_MS);
  }

  /** An error said a message was not handled: ping a moment later (once per burst). */
  _resyncSoon() {
    if (this._resyncTimer || this.transport !== "websocket") return; // polling: the 202 tells
    this._resyncTimer = setTimeout(() => { this._resyncTimer = null; this._ping(); }, RESYNC_DELAY_MS);
  }

  _onPong(pong) {
    this._confirm(pong.received);
    const [, round, written] = /^sync-(\d+)-(\d+)$/.exec(pong.ref) || [];
    // Written in this round before the ping, yet not handled: refused (rate
    // limit, a gap, Redis down). A pong from an earlier round says nothing new.
    if (Number(round) === this._round && Number(written) > pong.received && this._kept.length) this._resend();
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

  /** WebSocket only: send now if open, unnumbered and not kept (ping, ack). */
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

  _post(batch, init = {}) {
    return fetch(this._url(`/api/sessions/${encodeURIComponent(this.id)}/messages`), {
      method: "POST",
      headers: this._authHeaders({ "Content-Type": "application/json" }),
      body: `[${batch.map((out) => out.text).join(",")}]`,
      cache: "no-store",
      ...init,
    });
  }

  /**
   * Polling: POST what is kept, in order, in batches, until a 202's
   * `received` covers it. A failed, 5xx or 429 POST goes again with the same
   * cseqs (the server drops what it already handled); a 202 whose `received`
   * stops short means some were refused (rate limit): again after a moment.
   */
  async _flushPolling() {
    if (this._flushing) return;
    this._flushing = true;
    const gen = this._pollGen;
    let failures = 0;
    try {
      while (this._kept.length && this._wanted && gen === this._pollGen && this.transport === "polling") {
        const batch = takeBatch(this._kept, Math.floor(this._pace.size));
        while (!this._pace.take(batch.length)) await sleep(this._pace.wait(batch.length)); // each counts
        if (gen !== this._pollGen) return;
        for (const out of batch) this._count(out);
        let res;
        try {
          res = await this._post(batch);
        } catch {
          res = null;
        }
        if (gen !== this._pollGen) return;
        if (res && res.ok) {
          const body = await res.json().catch(() => ({}));
          this._confirm(body.received);
          failures = 0;
          if (this._kept[0]?.cseq <= batch.at(-1).cseq) await sleep(RESYNC_DELAY_MS);
          continue;
        }
        if (res && res.status === 401) { this._sessionLost("polling session expired"); return; }
        if (res && (res.status === 400 || res.status === 413)) {
          // Refused for good, none handled; report it like the WebSocket would,
          // and keep the count whole with pings in the refused messages' places.
          const body = await res.json().catch(() => ({}));
          const message = body.message || `HTTP ${res.status}`;
          this._deliverLocal({ type: "error", code: body.code || "bad-message", message, ref: batch[0].id });
          for (const out of batch) out.text = JSON.stringify({ type: "ping", cseq: out.cseq });
          continue;
        }
        // 429, 5xx or network: the same batch again, later.
        await sleep(res && res.status === 429 ? 1000 + backoffDelay(failures) : backoffDelay(failures));
        failures++;
      }
    } finally {
      this._flushing = false;
      // A new session or transport started while this one was waiting: serve it.
      if (gen !== this._pollGen) this._flush();
    }
  }

  // ---- common -------------------------------------------------------------------

  /** Send what is kept and not yet written to this connection, in cseq order. */
  _flush() {
    if (this.state !== "open") return;
    if (this.transport === "websocket") {
      const ws = this._ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      for (const out of this._kept) {
        if (out.cseq <= this._written) continue;
        if (!this._pace.take()) { // the rest when the pace allows
          if (!this._paceTimer) {
            this._paceTimer = setTimeout(() => { this._paceTimer = null; this._flush(); }, this._pace.wait());
          }
          break;
        }
        this._count(out);
        ws.send(out.text);
        this._written = out.cseq;
      }
      this._armConfirm();
    } else if (this.transport === "polling") {
      this._flushPolling();
    }
  }

  /** Send everything kept again, in order (the server drops repeats of what it handled). */
  _resend() {
    this._rewind();
    this._flush();
  }

  /** A new round: the next flush writes everything kept from the first. */
  _rewind() {
    this._round++;
    this._written = 0;
  }

  /** The server handled every cseq up to `received`: forget those. */
  _confirm(received) {
    if (!Number.isSafeInteger(received)) return;
    while (this._kept.length && this._kept[0].cseq <= received) this._kept.shift();
  }

  _count(out) {
    if (out.sent) this.stats.resent++;
    out.sent = true;
  }

  _deliver(msg) {
    if (!msg || typeof msg !== "object" || msg.type === "welcome") return;
    if (Number.isInteger(msg.seq)) {
      if (msg.seq <= this.lastSeq) return; // replayed twice (resume, poll retry)
      this.lastSeq = msg.seq;
      this._scheduleAck();
    }
    if (msg.type === "pong") this._onPong(msg);
    else if (msg.type === "error" && RESENT_CODES.has(msg.code)) this._resyncSoon();
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

/** The first kept messages that fit in one POST body (at least one). */
function takeBatch(kept, most = MAX_BATCH_COUNT) {
  let bytes = 2;
  let count = 0;
  while (count < kept.length && count < Math.min(most, MAX_BATCH_COUNT)) {
    const size = kept[count].text.length + 1;
    if (count && bytes + size > MAX_BATCH_BYTES) break;
    bytes += size;
    count++;
  }
  return kept.slice(0, count);
}
