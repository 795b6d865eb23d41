// webrtc-edge browser client: landing page, 1:1 calls by id (public mode) and
// rooms with one host and many participants (private mode).
//
// URL parameters (for people sharing links and for automated tests):
//   ?call=<peerId>                       call that peer as soon as connected
//   ?room=<name>&role=host|participant&name=<display name>&secret=<secret>
//   &transport=auto|websocket|polling    force a transport (default auto)
//   &autoanswer=1                        accept incoming 1:1 calls without asking
//   &media=0                             do not open camera/microphone (receive only)
//   &relay=1                             relay every call through TURN (hides our addresses)
//
// Test hooks: window.webrtcEdge (see `hooks` below), data-* attributes on
// <body> (data-signaling, data-transport, data-view, data-mode, data-peer-id)
// and on each remote tile <figure class="tile remote" data-peer-id data-state
// data-frames data-video-frames data-role>.

import { Signaling, RESENT_CODES } from "./signaling.js?v=4";
import { PeerCall, fetchIceServers } from "./call.js?v=4";

const $ = (id) => document.getElementById(id);
const PEER_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const LOG_LIMIT = 200;
const REF_LIMIT = 1000;

// ---- options from the URL ---------------------------------------------------

const params = new URLSearchParams(location.search);
const options = {
  call: params.get("call") || "",
  room: params.get("room") || "",
  role: params.get("role") === "host" ? "host" : "participant",
  name: params.get("name") || "",
  secret: params.get("secret") || "",
  transport: params.get("transport") || "auto",
  autoanswer: params.get("autoanswer") === "1",
  media: params.get("media") !== "0",
  relay: params.get("relay") === "1",
};
if (params.has("secret")) {
  // Keep the secret out of the address bar and history once read.
  params.delete("secret");
  history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}${location.hash}`);
}

// ---- state -------------------------------------------------------------------

const sig = new Signaling({ transport: options.transport });
const calls = new Map();          // peerId -> PeerCall
const incoming = new Map();       // peerId -> buffered messages while the user decides
const refs = new Map();           // message id -> {kind: "signal", peerId} | {kind: "join", ...}
let mode = "idle";                // idle | call | joining | room
let currentJoin = null;           // {room, role, name, secret} of the room we are in or joining
let media = null;                 // Promise<MediaStream|null>
let localStream = null;
let inbox = Promise.resolve();    // server messages are handled one at a time, in order
let ice = null;                   // ICE servers of our session: {servers, ttl, fetchedAt, refreshAt, username, session}
let iceFetch = null;              // the request under way, shared by calls set up meanwhile
let iceTimer = null;              // refreshes `ice` before its TURN credentials expire

/** Live state for automated tests and debugging. */
const hooks = {
  id: null,
  transport: null,
  signaling: "idle",
  mode: "idle",
  room: null,
  role: null,
  peers: new Map(),               // peerId -> {connectionState, framesDecoded, videoFrames, name, role, candidateType}
  ice: null,                      // {username, ttl, fetchedAt, refreshAt, refreshes}: the TURN credential in use
  iceErrors: [],                  // STUN/TURN refusals: {peerId, code, text, url}
  calls,                          // peerId -> PeerCall (its RTCPeerConnection is `.pc`)
  errors: [],                     // server error messages received
  cspViolations: [],              // Content-Security-Policy violations seen by this page
  log: [],                        // [time, text]
  stats: sig.stats,
  signalingClient: sig,
  call: (peerId) => startCall(peerId),
  join: (opts) => joinRoom(opts),
  hangup: () => hangup(),
  /** Simulate a network drop of the signaling connection (tests resume). */
  drop: () => sig.simulateDrop(),
};
window.webrtcEdge = hooks;

document.addEventListener("securitypolicyviolation", (ev) => {
  hooks.cspViolations.push(`${ev.effectiveDirective} ${ev.blockedURI || "inline"}`);
});

// ---- small UI helpers -----------------------------------------------------------

function log(text) {
  const time = new Date().toISOString().slice(11, 23);
  hooks.log.push([time, text]);
  if (hooks.log.length > LOG_LIMIT) hooks.log.shift();
  const list = $("log");
  const item = document.createElement("li");
  const stamp = document.createElement("time");
  stamp.textContent = time;
  item.append(stamp, " ", text);
  list.append(item);
  while (list.childElementCount > LOG_LIMIT) list.firstElementChild.remove();
}

function toast(text, kind = "info") {
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.textContent = text;
  $("toasts").append(el);
  setTimeout(() => el.classList.add("fade"), 5000);
  setTimeout(() => el.remove(), 5600);
}

function setMode(next) {
  mode = next;
  hooks.mode = next;
  hooks.room = currentJoin && next !== "idle" && next !== "call" ? currentJoin.room : null;
  hooks.role = next === "room" ? currentJoin.role : null;
  document.body.dataset.mode = next;
  $("copy-invite").hidden = next !== "room";
}

function showView(view) {
  document.body.dataset.view = view;
  $("landing").hidden = view !== "landing";
  $("stage").hidden = view !== "stage";
}

function setStage(title, subtitle = "") {
  $("stage-title").textContent = title;
  $("stage-subtitle").textContent = subtitle;
}

function updateEmpty() {
  $("tiles").dataset.count = String($("tiles").childElementCount);
  const text = mode === "room" && calls.size === 0
    ? currentJoin.role === "host" ? "Waiting for participants to join…" : "Waiting for the host…"
    : mode === "joining" ? "Joining…" : "";
  $("stage-empty").textContent = text;
  $("stage-empty").hidden = !text;
  if (mode === "room") {
    const parts = [currentJoin.role === "host" ? "Host" : "Participant"];
    if (currentJoin.name) parts.push(currentJoin.name);
    if (currentJoin.role === "host") parts.push(`${calls.size} participant${calls.size === 1 ? "" : "s"}`);
    setStage(`Room ${currentJoin.room}`, parts.join(" · "));
  }
}

function shortId(id) {
  return id.length > 10 ? `${id.slice(0, 8)}…` : id;
}

const STATUS_TEXT = {
  idle: "Starting…",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

function renderStatus() {
  const { state, transport } = sig;
  hooks.signaling = state;
  hooks.transport = transport;
  document.body.dataset.signaling = state;
  if (transport) document.body.dataset.transport = transport;
  const via = transport === "polling" ? "long-polling" : transport === "websocket" ? "WebSocket" : "";
  $("status-text").textContent = state === "open" && via ? `${STATUS_TEXT[state]} · ${via}` : STATUS_TEXT[state] || state;
  $("status").dataset.state = state;
}

// ---- media ----------------------------------------------------------------------

function getLocalMedia() {
  if (!media) media = acquireMedia();
  return media;
}

async function acquireMedia() {
  if (!options.media || !navigator.mediaDevices?.getUserMedia) {
    $("local-tile").hidden = true;
    renderMediaButtons();
    return null;
  }
  const attempts = [
    { audio: true, video: { width: { ideal: 640 }, height: { ideal: 360 } } },
    { video: true },
    { audio: true },
  ];
  let lastError = null;
  for (const constraints of attempts) {
    try {
      localStream = await navigator.mediaDevices.getUserMedia(constraints);
      $("local-video").srcObject = localStream;
      $("local-tile").hidden = !localStream.getVideoTracks().length;
      renderMediaButtons();
      return localStream;
    } catch (err) {
      lastError = err;
    }
  }
  toast(`No camera or microphone (${lastError?.name || "unavailable"}): receiving only.`, "warn");
  $("local-tile").hidden = true;
  return null;
}

function releaseMedia() {
  if (localStream) for (const track of localStream.getTracks()) track.stop();
  localStream = null;
  media = null;
  $("local-video").srcObject = null;
  $("local-tile").hidden = false;
}

function renderMediaButtons() {
  const audio = localStream?.getAudioTracks()[0];
  const video = localStream?.getVideoTracks()[0];
  const mic = $("toggle-mic");
  const cam = $("toggle-cam");
  mic.disabled = !audio;
  cam.disabled = !video;
  mic.textContent = audio && !audio.enabled ? "Unmute" : "Mute";
  mic.setAttribute("aria-pressed", String(Boolean(audio && !audio.enabled)));
  cam.textContent = video && !video.enabled ? "Camera on" : "Camera off";
  cam.setAttribute("aria-pressed", String(Boolean(video && !video.enabled)));
}

// ---- calls and tiles ---------------------------------------------------------------

/** Everything a new RTCPeerConnection needs: local media and ICE servers. */
async function prepare() {
  const [stream, iceServers] = await Promise.all([getLocalMedia(), currentIceServers()]);
  return { stream, iceServers };
}

// ---- ICE servers and their TURN credentials -------------------------------------------------

/** The session's ICE servers: fetched once and shared by its calls, fetched again when due. */
async function currentIceServers() {
  if (ice && ice.session === sig.id && Date.now() < ice.refreshAt) return ice.servers;
  return (await loadIce()).servers;
}

function loadIce() {
  if (!iceFetch) {
    iceFetch = fetchIceServers(sig.iceServers, sig.token)
      .then((fresh) => {
        ice = { ...fresh, session: sig.id };
        hooks.ice = { username: ice.username, ttl: ice.ttl, fetchedAt: ice.fetchedAt, refreshAt: ice.refreshAt,
                      refreshes: hooks.ice ? hooks.ice.refreshes : 0 };
        scheduleIceRefresh();
        return ice;
      })
      .finally(() => { iceFetch = null; });
  }
  return iceFetch;
}

function scheduleIceRefresh() {
  clearTimeout(iceTimer);
  iceTimer = setTimeout(refreshIce, Math.max(0, ice.refreshAt - Date.now()));
}

/**
 * Before the TURN credentials expire: fetch fresh ones and move every call to them, one call at
 * a time (each restarts ICE and allocates anew before the next starts, so the session's TURN
 * allocations stay within coturn's quota). Without calls, the next call fetches them.
 */
async function refreshIce() {
  if (calls.size === 0) { ice = null; hooks.ice = null; return; }
  const fresh = await loadIce();
  hooks.ice.refreshes++;
  log(`ICE servers refreshed (TURN user ${fresh.username || "none"}); restarting ICE of ${calls.size} call(s)`);
  for (const call of [...calls.values()]) {
    if (ice !== fresh) return; // a newer refresh took over
    await call.setIceServers(fresh.servers);
  }
}

function remember(ref, what) {
  refs.set(ref, what);
  if (refs.size > REF_LIMIT) refs.delete(refs.keys().next().value);
}

async function ensureCall(peerId, { name = "", role = "", initiate = false } = {}) {
  let call = calls.get(peerId);
  if (call) return call;
  const { stream, iceServers } = await prepare();
  call = calls.get(peerId); // created while we waited?
  if (call) return call;
  if (mode === "idle") return null; // hung up while we waited
  call = new PeerCall({
    peerId,
    selfId: sig.id,
    name,
    role,
    iceServers,
    relayOnly: options.relay,
    localStream: stream,
    signal: (type, data) => remember(sig.send({ type, to: peerId, data }), { kind: "signal", peerId }),
  });
  calls.set(peerId, call);
  hooks.peers.set(peerId, { connectionState: "new", framesDecoded: 0, videoFrames: 0, name, role, candidateType: "" });
  addTile(call);
  call.addEventListener("state", () => onCallState(call));
  call.addEventListener("iceerror", (ev) => {
    hooks.iceErrors.push({ peerId, ...ev.detail });
    if (hooks.iceErrors.length > LOG_LIMIT) hooks.iceErrors.shift();
    // 701: the server is not reachable from one of our networks (an IPv6 one, say): routine.
    if (ev.detail.code !== 701) log(`peer ${peerId}: ${ev.detail.url} answered ${ev.detail.code} ${ev.detail.text}`);
  });
  call.addEventListener("stats", () => {
    const entry = hooks.peers.get(peerId);
    if (entry) Object.assign(entry, { framesDecoded: call.framesDecoded, candidateType: call.localCandidateType });
    const tile = tileFor(peerId);
    if (tile) tile.dataset.frames = String(call.framesDecoded);
  });
  call.addEventListener("closed", (ev) => onCallClosed(call, ev.detail.reason));
  log(`peer ${peerId}: call created${initiate ? ", offering" : ""}`);
  if (initiate) call.start();
  updateEmpty();
  return call;
}

function tileFor(peerId) {
  return $("tiles").querySelector(`figure[data-peer-id="${CSS.escape(peerId)}"]`);
}

function addTile(call) {
  const tile = $("tile-template").content.firstElementChild.cloneNode(true);
  tile.dataset.peerId = call.peerId;
  tile.dataset.role = call.role || "peer";
  tile.querySelector(".name").textContent = call.name || shortId(call.peerId);
  tile.querySelector(".name").title = call.peerId;
  tile.querySelector(".badge").textContent = "new";
  const video = tile.querySelector("video");
  video.srcObject = call.remoteStream;
  const unmute = tile.querySelector(".unmute");
  unmute.addEventListener("click", () => { video.muted = false; unmute.hidden = true; video.play().catch(() => {}); });
  call.addEventListener("track", () => playVideo(video, unmute));
  countFrames(video, call.peerId, tile);
  $("tiles").append(tile);
}

/** Start playback; if autoplay with sound is refused, play muted and offer "Unmute". */
function playVideo(video, unmuteButton) {
  video.play().catch((err) => {
    if (err.name !== "NotAllowedError") return;
    video.muted = true;
    unmuteButton.hidden = false;
    video.play().catch(() => {});
  });
}

/** Count frames actually presented by the <video> (requestVideoFrameCallback). */
function countFrames(video, peerId, tile) {
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
  let frames = 0;
  const onFrame = () => {
    if (!tile.isConnected) return;
    frames++;
    const entry = hooks.peers.get(peerId);
    if (entry) entry.videoFrames = frames;
    if (frames % 10 === 1) tile.dataset.videoFrames = String(frames);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function onCallState(call) {
  const state = call.connectionState;
  const entry = hooks.peers.get(call.peerId);
  if (entry) entry.connectionState = state;
  const tile = tileFor(call.peerId);
  if (tile) {
    tile.dataset.state = state;
    tile.querySelector(".badge").textContent = state;
  }
  log(`peer ${call.peerId}: ${state}`);
}

function onCallClosed(call, reason) {
  if (calls.get(call.peerId) !== call) return;
  calls.delete(call.peerId);
  hooks.peers.delete(call.peerId);
  tileFor(call.peerId)?.remove();
  log(`peer ${call.peerId}: closed (${reason})`);
  if (mode === "call" && calls.size === 0) {
    toast(reason === "remote hangup" ? "The other side hung up." : `Call ended (${reason}).`);
    endSession();
  }
  updateEmpty();
}

function closeAllCalls({ sendBye }) {
  for (const call of [...calls.values()]) call.close("hangup", { sendBye });
}

// ---- actions -------------------------------------------------------------------

async function startCall(peerId) {
  peerId = String(peerId || "").trim();
  if (!PEER_ID_RE.test(peerId)) { toast("That is not a valid peer id.", "error"); return; }
  if (peerId === sig.id) { toast("That is your own id.", "error"); return; }
  if (mode === "room" || mode === "joining") { toast("Leave the room first.", "error"); return; }
  setMode("call");
  showView("stage");
  setStage("Call", `with ${peerId}`);
  updateEmpty();
  log(`calling ${peerId}`);
  await ensureCall(peerId, { initiate: true });
}

async function joinRoom({ room, role = "participant", name = "", secret = "" } = {}) {
  room = String(room || "").trim();
  if (!ROOM_RE.test(room)) { toast("Room names use letters, digits, - and _ (at most 64).", "error"); return; }
  if (mode !== "idle") { toast("Hang up first.", "error"); return; }
  currentJoin = { room, role: role === "host" ? "host" : "participant", name: String(name).slice(0, 64), secret };
  setMode("joining");
  showView("stage");
  setStage(`Room ${room}`, "Joining…");
  updateEmpty();
  await getLocalMedia(); // ask for the camera before anyone offers
  sendJoin();
}

function sendJoin() {
  const { room, role, name, secret } = currentJoin;
  const msg = { type: "join", room, role, name };
  if (secret) msg.secret = secret;
  remember(sig.send(msg), { kind: "join" });
  log(`join ${room} as ${role}`);
}

function hangup() {
  if (mode === "room" || mode === "joining") {
    closeAllCalls({ sendBye: true });
    sig.send({ type: "leave" });
    log(`leave ${currentJoin?.room}`);
  } else if (mode === "call") {
    closeAllCalls({ sendBye: true });
  }
  endSession();
}

/** Back to the landing page after a call or room. */
function endSession() {
  closeAllCalls({ sendBye: false });
  currentJoin = null;
  setMode("idle");
  showView("landing");
  releaseMedia();
  // A reload should not dial again.
  for (const key of ["call", "room", "role", "name", "secret", "autoanswer"]) params.delete(key);
  history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
}

// ---- incoming calls ---------------------------------------------------------------

function offerIncoming(from, msg) {
  if (incoming.has(from)) { incoming.get(from).push(msg); return; }
  incoming.set(from, [msg]);
  if (options.autoanswer) { acceptIncoming(from); return; }
  const dialog = $("incoming");
  if (dialog.open) return; // one question at a time; the others wait
  $("incoming-from").textContent = from;
  dialog.dataset.from = from;
  dialog.showModal();
}

$("incoming").addEventListener("close", () => {
  const dialog = $("incoming");
  const from = dialog.dataset.from;
  if (!from || !incoming.has(from)) return;
  if (dialog.returnValue === "accept") acceptIncoming(from);
  else declineIncoming(from);
  dialog.returnValue = "";
});

async function acceptIncoming(from) {
  const buffered = incoming.get(from) || [];
  if (mode === "idle") {
    setMode("call");
    showView("stage");
    setStage("Call", `with ${from}`);
    updateEmpty();
  }
  log(`accepting call from ${from}`);
  const call = await ensureCall(from, { initiate: false });
  incoming.delete(from);
  if (call) for (const msg of buffered) call.handle(msg.type, msg.data);
}

function declineIncoming(from) {
  incoming.delete(from);
  sig.send({ type: "bye", to: from, data: { reason: "declined" } });
  log(`declined call from ${from}`);
}

// ---- server messages ------------------------------------------------------------------

async function route(msg) {
  switch (msg.type) {
    case "joined": {
      if (!currentJoin) break; // left meanwhile
      setMode("room");
      log(`joined ${msg.room} as ${msg.role}; ${msg.peers?.length || 0} peer(s) here`);
      updateEmpty();
      // We are the newcomer: we offer to everyone already here.
      for (const peer of msg.peers || []) await ensureCall(peer.id, { name: peer.name, role: peer.role, initiate: true });
      break;
    }
    case "peer-joined": {
      const peer = msg.peer || {};
      log(`peer-joined ${peer.id} (${peer.role}${peer.name ? `, ${peer.name}` : ""})`);
      // The newcomer offers; we only get ready to answer.
      if (peer.id && mode === "room") await ensureCall(peer.id, { name: peer.name, role: peer.role, initiate: false });
      break;
    }
    case "peer-left":
      log(`peer-left ${msg.id}`);
      calls.get(msg.id)?.close("left", { sendBye: false });
      if (incoming.has(msg.id)) incoming.delete(msg.id);
      break;
    case "left":
      log(`left ${msg.room}`);
      break;
    case "offer":
    case "answer":
    case "candidate":
    case "bye": {
      const from = msg.from;
      if (typeof from !== "string") break;
      if (msg.type !== "candidate") log(`${msg.type} from ${from}`);
      const call = calls.get(from);
      if (call) { call.handle(msg.type, msg.data); break; }
      if (incoming.has(from)) {
        if (msg.type === "bye") { incoming.delete(from); closeIncomingDialog(from); toast(`${from} hung up.`); }
        else incoming.get(from).push(msg);
        break;
      }
      if (msg.type !== "offer") break; // stale answer/candidate/bye for a call that is gone
      if (mode === "room") {
        // Room peers are vetted by the server (host <-> participants only).
        (await ensureCall(from, { initiate: false }))?.handle(msg.type, msg.data);
      } else if (mode === "joining") {
        sig.send({ type: "bye", to: from, data: { reason: "busy" } });
      } else {
        offerIncoming(from, msg);
      }
      break;
    }
    case "error":
      onServerError(msg);
      break;
    case "pong":
    case "peers":
      break;
    default:
      log(`ignored message type ${String(msg.type).slice(0, 40)}`);
  }
}

function closeIncomingDialog(from) {
  const dialog = $("incoming");
  if (dialog.open && dialog.dataset.from === from) { dialog.dataset.from = ""; dialog.close(); }
}

const ERROR_TEXT = {
  "unknown-peer": "No peer with that id is online.",
  forbidden: "Not allowed.",
  "room-full": "The room is full.",
  "room-has-host": "The room already has a host.",
  "bad-secret": "Wrong or missing room secret.",
  unauthorized: "Session expired.",
};

function onServerError(msg) {
  hooks.errors.push(msg);
  const about = msg.ref !== undefined ? refs.get(msg.ref) : undefined;
  log(`error ${msg.code}: ${msg.message || ""}`);
  if (RESENT_CODES.has(msg.code)) return; // the client sends the message again by itself
  const joinCodes = ["bad-secret", "room-full", "room-has-host"];
  if (about?.kind === "join" || (about === undefined && mode === "joining" && joinCodes.includes(msg.code))) {
    toast(`Could not join: ${ERROR_TEXT[msg.code] || msg.message || msg.code}`, "error");
    if (mode === "joining") endSession();
    return;
  }
  if (about?.kind === "signal" && (msg.code === "unknown-peer" || msg.code === "forbidden")) {
    const call = calls.get(about.peerId);
    if (call) {
      toast(`${shortId(about.peerId)}: ${ERROR_TEXT[msg.code]}`, "error");
      call.close(msg.code, { sendBye: false });
    }
    return;
  }
  toast(ERROR_TEXT[msg.code] || msg.message || msg.code, "error");
}

// ---- signaling events ------------------------------------------------------------------

sig.addEventListener("state", renderStatus);

sig.addEventListener("welcome", (ev) => {
  const w = ev.detail;
  hooks.id = w.id;
  document.body.dataset.peerId = w.id;
  $("my-id").textContent = w.id;
  $("copy-id").disabled = false;
  $("copy-link").disabled = false;
  renderStatus();
  if (w.resumed) {
    log(`resumed session over ${w.transport}${w.lost ? `; ${w.lost} message(s) lost` : ""}`);
    if (w.lost) toast(`${w.lost} signaling message(s) were lost while reconnecting.`, "warn");
  } else {
    log(`session ${w.id} over ${w.transport}`);
  }
  if (w.replaced) {
    // The old session (and with it our id, room membership and calls) is gone.
    closeAllCalls({ sendBye: false });
    if (mode === "call") {
      toast("Connection lost: the call ended.", "error");
      endSession();
    } else if (currentJoin && (mode === "room" || mode === "joining")) {
      toast("Connection lost: rejoining the room.", "warn");
      setMode("joining");
      updateEmpty();
      sendJoin();
    }
  }
});

sig.addEventListener("session-lost", (ev) => log(`session lost: ${ev.detail.reason}`));
sig.addEventListener("lost", (ev) => toast(`${ev.detail.lost} signaling message(s) were lost.`, "warn"));

sig.addEventListener("message", (ev) => {
  const msg = ev.detail;
  inbox = inbox.then(() => route(msg)).catch((err) => console.error("[app] handling", msg.type, "failed:", err));
});

// ---- forms and buttons ----------------------------------------------------------------------

$("call-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  startCall($("call-peer").value);
});

$("room-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  joinRoom({
    room: form.get("room"),
    role: form.get("role"),
    name: form.get("name"),
    secret: form.get("secret"),
  });
});

$("hangup").addEventListener("click", hangup);

$("toggle-mic").addEventListener("click", () => {
  for (const track of localStream?.getAudioTracks() || []) track.enabled = !track.enabled;
  renderMediaButtons();
});

$("toggle-cam").addEventListener("click", () => {
  for (const track of localStream?.getVideoTracks() || []) track.enabled = !track.enabled;
  renderMediaButtons();
});

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied.`);
  } catch {
    toast(text);
  }
}

$("copy-id").addEventListener("click", () => copy(sig.id, "Id"));
$("copy-invite").addEventListener("click", () => {
  // Participants' link; the secret is not in it (share that separately).
  const url = new URL("/", location.href);
  url.searchParams.set("room", currentJoin.room);
  url.searchParams.set("role", "participant");
  copy(url.href, "Invite link");
});
$("copy-link").addEventListener("click", () => copy(new URL(`/?call=${encodeURIComponent(sig.id)}`, location.href).href, "Call link"));

window.addEventListener("pagehide", () => {
  if (mode === "room" || mode === "joining") { closeAllCalls({ sendBye: true }); sig.send({ type: "leave" }); }
  else closeAllCalls({ sendBye: true });
  sig.close();
});

// Back from the back-forward cache: the session was closed on pagehide.
window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });

// ---- start ---------------------------------------------------------------------------------------

$("call-peer").value = options.call;
$("room-name").value = options.room;
$("room-user").value = options.name;
$("room-secret").value = options.secret;
for (const radio of document.querySelectorAll('input[name="role"]')) radio.checked = radio.value === options.role;
renderMediaButtons();
renderStatus();
showView(options.call || options.room ? "stage" : "landing");

sig.connect().then(() => {
  if (options.call) startCall(options.call);
  else if (options.room) joinRoom(options);
});
