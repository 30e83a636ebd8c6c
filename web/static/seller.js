// Talk seller console: takes masked calls (docs/protocol.md, "Masked seller calls") and lists voicemail.
// It speaks the agent messages of /ws/v1. In a masked call the server bridges the audio: this page makes its own
// WebRTC offer to the server (call.connected with media "server") and applies the server's rtc.answer, so the
// buyer and the seller never see each other's network details. Everything about a buyer (alias, listing, label)
// is untrusted text and only ever set with textContent.
// No framework and no build step: this file is served as is.
(function () {
  'use strict';

  const root = document.getElementById('seller');
  if (!root) return;

  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;
  const STATUS_CLEAR_MS = 10000;
  const RING_CYCLE_MS = 3000;
  const RING_VOLUME = 0.15;
  const DEFAULT_RING_TIMEOUT_S = 20;
  const CLOSE_REPLACED = 4409;
  const RECEIVED_MAX = 10000; // the test hook's message log stays bounded in a console left open for days

  // For tests: the current call's RTCPeerConnection (null between calls) and every parsed server message, in order.
  const hook = { pc: null, received: [] };
  window.talkSeller = hook;

  function byId(id) {
    return document.getElementById(id);
  }

  const ui = {
    connection: byId('connection'),
    connectionText: byId('connection-text'),
    banner: byId('banner'),
    bannerText: byId('banner-text'),
    bannerAction: byId('banner-action'),
    available: byId('available'),
    missedNote: byId('missed-note'),
    panelWaiting: byId('panel-waiting'),
    waitingText: byId('waiting-text'),
    callMessage: byId('call-message'),
    panelIncoming: byId('panel-incoming'),
    incomingCaller: byId('incoming-caller'),
    incomingListing: byId('incoming-listing'),
    ringCountdown: byId('ring-countdown'),
    answer: byId('answer'),
    decline: byId('decline'),
    panelConnected: byId('panel-connected'),
    connectedCaller: byId('connected-caller'),
    connectedListing: byId('connected-listing'),
    connectedAudio: byId('connected-audio'),
    callTimer: byId('call-timer'),
    mute: byId('mute'),
    hangup: byId('hangup'),
    remoteAudio: byId('remote-audio'),
    voicemailCount: byId('voicemail-count'),
    voicemailEmpty: byId('voicemail-empty'),
    voicemailList: byId('voicemails'),
    statusLine: byId('status-line'),
  };

  const pageTitle = document.title;

  const session = {
    ws: null,
    nextId: 1,
    pending: new Map(), // id -> {type, fields, resolve, quiet}
    ready: false,
    opened: false,
    reconnectDelay: RECONNECT_MIN_MS,
    reconnectTimer: null,
    stopped: false,
    replaced: false,
    iceServers: [],
    ringTimeout: DEFAULT_RING_TIMEOUT_S,
    available: false,
    wantAvailable: false,
  };

  // The one call this console handles, or null.
  // {id, label, listing, phase: 'ringing'|'answering'|'connected', stream, pc, serverMedia, offerSent,
  //  localCandidates, remoteCandidates, ringTimer, ringDeadline, callTimer, connectedAt, muted}
  let currentCall = null;

  // The voicemail inbox (static/voicemail.js, loaded first); created in start(), null if that script is missing.
  let inbox = null;

  let statusTimer = null;

  // ---------------------------------------------------------------- small helpers

  // Untrusted values as display text.
  function text(value) {
    if (value === null || value === undefined) return '';
    return typeof value === 'string' ? value : String(value);
  }

  function isObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  function showStatus(message, kind) {
    clearTimeout(statusTimer);
    ui.statusLine.textContent = message;
    ui.statusLine.dataset.kind = kind || 'info';
    statusTimer = setTimeout(clearStatus, STATUS_CLEAR_MS);
  }

  function clearStatus() {
    ui.statusLine.textContent = '';
    delete ui.statusLine.dataset.kind;
  }

  function reportFault(context, err) {
    const detail = err && err.message ? err.message : String(err);
    console.warn('talk seller:', context, err);
    showStatus(context + ': ' + detail, 'error');
  }

  function setConnection(kind, label) {
    root.dataset.connection = kind;
    ui.connection.dataset.connection = kind;
    ui.connectionText.textContent = label;
    updateWaitingText();
  }

  function showBanner(message, actionLabel, onAction) {
    ui.bannerText.textContent = message;
    ui.bannerAction.hidden = !actionLabel;
    ui.bannerAction.textContent = actionLabel || '';
    ui.bannerAction.onclick = onAction || null;
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
  }

  function updateWaitingText() {
    let message;
    if (!session.ready) message = 'Not connected to the server.';
    else if (session.available) message = 'Waiting for calls…';
    else message = 'You are unavailable. Tick Available to receive calls.';
    ui.waitingText.textContent = message;
  }

  function showCallMessage(message) {
    ui.callMessage.textContent = message;
    ui.callMessage.hidden = !message;
  }

  function formatClock(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const pad = (n) => String(n).padStart(2, '0');
    return pad(Math.floor(total / 60)) + ':' + pad(total % 60);
  }

  function setCallState(callState) {
    root.dataset.callState = callState;
    ui.panelIncoming.hidden = callState !== 'ringing';
    ui.panelConnected.hidden = callState !== 'connected';
    ui.panelWaiting.hidden = callState === 'ringing' || callState === 'connected';
    if (callState === 'ringing') document.title = 'Incoming call · ' + pageTitle;
    else if (callState === 'connected') document.title = 'In call · ' + pageTitle;
    else document.title = pageTitle;
  }

  // ---------------------------------------------------------------- WebSocket and requests

  function connect() {
    clearTimeout(session.reconnectTimer);
    session.reconnectTimer = null;
    if (session.stopped) return;
    setConnection('connecting', 'Connecting…');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(scheme + '//' + location.host + (root.dataset.wsPath || '/ws/v1'));
    } catch (err) {
      reportFault('Could not open the connection', err);
      scheduleReconnect();
      return;
    }
    session.ws = ws;
    session.nextId = 1;
    session.opened = false;
    session.ready = false;
    ws.addEventListener('open', () => ws === session.ws && onSocketOpen());
    ws.addEventListener('message', (ev) => ws === session.ws && onSocketMessage(ev));
    ws.addEventListener('close', (ev) => ws === session.ws && onSocketClose(ev));
  }

  function onSocketOpen() {
    session.opened = true;
    sayHello().catch((err) => reportFault('Connecting', err));
  }

  function onSocketClose(ev) {
    const wasOpened = session.opened;
    session.ws = null;
    session.ready = false;
    failPending();
    ui.available.disabled = true;
    if (currentCall) endCall(currentCall, 'connection lost');
    if (ev.code === CLOSE_REPLACED || session.replaced) {
      onReplaced();
      return;
    }
    if (session.stopped) return;
    if (wasOpened) {
      scheduleReconnect();
      return;
    }
    // The upgrade failed: possibly a 401 because the login session ended.
    checkSession().then((loggedIn) => (loggedIn ? scheduleReconnect() : onLoggedOut()));
  }

  function scheduleReconnect() {
    if (session.stopped || session.reconnectTimer) return;
    const delay = session.reconnectDelay * (0.8 + Math.random() * 0.4);
    session.reconnectDelay = Math.min(session.reconnectDelay * 2, RECONNECT_MAX_MS);
    setConnection('offline', 'Offline, retrying in ' + Math.ceil(delay / 1000) + ' s');
    session.reconnectTimer = setTimeout(connect, delay);
  }

  async function checkSession() {
    try {
      const res = await fetch(location.pathname, {
        method: 'GET', redirect: 'manual', credentials: 'same-origin', cache: 'no-store',
      });
      return !(res.type === 'opaqueredirect' || res.status === 401 || res.status === 403);
    } catch (err) {
      return true; // network down: keep retrying
    }
  }

  function onLoggedOut() {
    session.stopped = true;
    setConnection('logged-out', 'Logged out');
    showBanner('Your login session has ended.', 'Log in again', () => {
      location.assign('/login?next=' + encodeURIComponent(location.pathname));
    });
  }

  function onReplaced() {
    session.stopped = true;
    setConnection('replaced', 'Open in another tab');
    showBanner('This console was opened in another tab or window, so this one stopped receiving calls.',
      'Use this tab', useThisTab);
  }

  function useThisTab() {
    session.stopped = false;
    session.replaced = false;
    session.reconnectDelay = RECONNECT_MIN_MS;
    hideBanner();
    connect();
  }

  // Resolves with the `result` frame; never rejects (a lost connection resolves as a failed reply).
  function request(type, fields, options) {
    const quiet = Boolean(options && options.quiet);
    const ws = session.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      const reply = failedReply('disconnected', 'not connected to the server');
      if (!quiet) showRequestError(type, fields, reply.error);
      return Promise.resolve(reply);
    }
    const id = session.nextId++;
    return new Promise((resolve) => {
      session.pending.set(id, { type, fields, resolve, quiet });
      ws.send(JSON.stringify(Object.assign({ id, type }, fields)));
    });
  }

  function failedReply(code, message) {
    return { type: 'result', success: false, error: { code, message } };
  }

  function failPending() {
    const pending = [...session.pending.values()];
    session.pending.clear();
    for (const entry of pending) entry.resolve(failedReply('disconnected', 'connection lost'));
  }

  function onResult(msg) {
    const entry = session.pending.get(msg.id);
    if (!entry) {
      if (msg.success === false) showRequestError('request', null, msg.error);
      return;
    }
    session.pending.delete(msg.id);
    if (msg.success === false && !entry.quiet) showRequestError(entry.type, entry.fields, msg.error);
    entry.resolve(msg);
  }

  function showRequestError(type, fields, error) {
    // Errors about a call already left (late candidates, races) are noise.
    if (fields && fields.call_id && (!currentCall || currentCall.id !== fields.call_id)) return;
    const err = error || {};
    showStatus(type + ' failed: ' + (err.message || err.code || 'unknown error'), 'error');
  }

  const eventHandlers = {
    'result': onResult,
    'call.incoming': onIncoming,
    'call.ring_stopped': onRingStopped,
    'call.connected': onConnected,
    'call.ended': onCallEnded,
    'rtc.answer': onRemoteAnswer,
    'rtc.offer': onRemoteOffer,
    'rtc.candidate': onRemoteCandidate,
    'agent.status': onAgentStatus,
    'voicemail.new': (msg) => inbox && inbox.onNew(msg),
    'session.replaced': () => { session.replaced = true; },
  };

  function onSocketMessage(ev) {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (err) {
      showStatus('Received an unreadable message from the server', 'error');
      return;
    }
    if (!isObject(msg)) return;
    hook.received.push(msg);
    if (hook.received.length > RECEIVED_MAX) hook.received.splice(0, hook.received.length - RECEIVED_MAX);
    const handler = eventHandlers[msg.type];
    if (!handler) return; // a newer server may send events this console doesn't know yet
    try {
      const pending = handler(msg);
      if (pending && typeof pending.catch === 'function') {
        pending.catch((err) => reportFault('Handling ' + msg.type, err));
      }
    } catch (err) {
      reportFault('Handling ' + msg.type, err);
    }
  }

  // ---------------------------------------------------------------- hello and availability

  async function sayHello() {
    const reply = await request('hello', {});
    if (!reply.success) return;
    const result = reply.result || {};
    session.ready = true;
    session.reconnectDelay = RECONNECT_MIN_MS;
    session.iceServers = Array.isArray(result.ice_servers) ? result.ice_servers : [];
    session.ringTimeout = result.ring_timeout || DEFAULT_RING_TIMEOUT_S;
    hideBanner();
    setConnection('online', 'Connected');
    ui.available.disabled = false;
    // A dropped connection shouldn't silently take the seller off duty.
    const reassert = session.wantAvailable && !result.available;
    setAvailable(Boolean(result.available));
    if (result.available) session.wantAvailable = true;
    if (reassert) requestAvailable(true);
    if (inbox) await inbox.load();
  }

  function setAvailable(available) {
    session.available = available;
    ui.available.checked = available;
    root.dataset.available = String(available);
    updateWaitingText();
  }

  function onAvailableChange() {
    unlockAudio(); // ticking the box is the user gesture that lets a later ring be heard
    const wanted = ui.available.checked;
    session.wantAvailable = wanted;
    if (wanted) ui.missedNote.hidden = true;
    requestAvailable(wanted);
  }

  async function requestAvailable(wanted) {
    ui.available.disabled = true;
    const reply = await request('agent.available', { available: wanted });
    ui.available.disabled = !session.ready;
    if (reply.success && reply.result) setAvailable(Boolean(reply.result.available));
    else setAvailable(session.available);
  }

  function onAgentStatus(msg) {
    const available = Boolean(msg.available);
    session.wantAvailable = available;
    setAvailable(available);
    if (!available && msg.reason === 'missed-ring') ui.missedNote.hidden = false;
  }

  // ---------------------------------------------------------------- ring sound (Web Audio)

  const ringer = { ctx: null, gain: null, oscillators: [], timer: null };

  function unlockAudio() {
    const AudioCtx = window.AudioContext || window.webkitAudioContext;
    if (!AudioCtx) return;
    try {
      if (!ringer.ctx) ringer.ctx = new AudioCtx();
      if (ringer.ctx.state === 'suspended') ringer.ctx.resume().catch(() => {});
    } catch (err) {
      ringer.ctx = null; // no sound; the incoming panel still shows
    }
  }

  function startRinging() {
    stopRinging();
    unlockAudio();
    const ctx = ringer.ctx;
    if (!ctx) return;
    try {
      ringer.gain = ctx.createGain();
      ringer.gain.gain.value = 0;
      ringer.gain.connect(ctx.destination);
      ringer.oscillators = [440, 480].map((frequency) => {
        const osc = ctx.createOscillator();
        osc.frequency.value = frequency;
        osc.connect(ringer.gain);
        osc.start();
        return osc;
      });
      scheduleRingBurst();
      ringer.timer = setInterval(scheduleRingBurst, RING_CYCLE_MS);
      root.dataset.ringing = 'true';
    } catch (err) {
      stopRinging();
    }
  }

  function scheduleRingBurst() {
    if (!ringer.gain) return;
    const gain = ringer.gain.gain;
    const start = ringer.ctx.currentTime + 0.05;
    for (const [on, off] of [[0, 0.4], [0.6, 1.0]]) {
      gain.setTargetAtTime(RING_VOLUME, start + on, 0.01);
      gain.setTargetAtTime(0, start + off, 0.01);
    }
  }

  function stopRinging() {
    clearInterval(ringer.timer);
    ringer.timer = null;
    for (const osc of ringer.oscillators) {
      try {
        osc.stop();
        osc.disconnect();
      } catch (err) { /* already stopped */ }
    }
    ringer.oscillators = [];
    if (ringer.gain) ringer.gain.disconnect();
    ringer.gain = null;
    root.dataset.ringing = 'false';
  }

  // ---------------------------------------------------------------- incoming call

  function callerLabel(msg) {
    return (isObject(msg.caller) && text(msg.caller.label)) || 'Buyer';
  }

  function onIncoming(msg) {
    if (currentCall) {
      // The server should not ring a busy console; if it does, pass the call on rather than drop ours.
      if (currentCall.id !== msg.call_id) request('call.decline', { call_id: msg.call_id }, { quiet: true });
      return;
    }
    const call = {
      id: msg.call_id,
      label: callerLabel(msg),
      listing: text(msg.listing),
      phase: 'ringing',
      stream: null,
      pc: null,
      serverMedia: false,
      offerSent: false,
      localCandidates: [],
      remoteCandidates: [],
      ringTimer: null,
      callTimer: null,
      muted: false,
    };
    currentCall = call;
    root.dataset.callId = call.id;
    showCallMessage('');
    ui.incomingCaller.textContent = call.label;
    ui.incomingListing.textContent = call.listing || '(no listing)';
    ui.answer.disabled = false;
    ui.decline.disabled = false;
    startRingCountdown(call, msg.ring_timeout || session.ringTimeout);
    startRinging();
    setCallState('ringing');
    ui.answer.focus();
  }

  function startRingCountdown(call, seconds) {
    call.ringDeadline = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.max(0, Math.ceil((call.ringDeadline - Date.now()) / 1000));
      ui.ringCountdown.textContent = left + ' s';
    };
    tick();
    call.ringTimer = setInterval(tick, 250);
  }

  async function answerCall() {
    const call = currentCall;
    if (!call || call.phase !== 'ringing') return;
    call.phase = 'answering';
    ui.answer.disabled = true;
    ui.decline.disabled = true;
    stopRinging();
    let stream;
    try {
      stream = await openMicrophone();
    } catch (err) {
      if (currentCall === call) declineCall(call, err.message + ' The call was declined.');
      return;
    }
    if (currentCall !== call) {
      stopStream(stream); // the call ended while the browser asked for the microphone
      return;
    }
    call.stream = stream;
    const reply = await request('call.answer', { call_id: call.id });
    if (!reply.success && currentCall === call) endCall(call, 'not answered: ' + reply.error.code);
  }

  // The microphone comes before call.answer: a buyer must never be connected to a seller who can't speak.
  async function openMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('This page cannot use a microphone (it needs HTTPS).');
    }
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      const name = err && err.name;
      if (name === 'NotAllowedError' || name === 'SecurityError') {
        throw new Error('Microphone access was denied. Allow the microphone for this site to answer calls.');
      }
      if (name === 'NotFoundError' || name === 'OverconstrainedError') {
        throw new Error('No microphone was found. Connect one to answer calls.');
      }
      if (name === 'NotReadableError') throw new Error('The microphone is in use by another application.');
      throw new Error('Could not start the microphone: ' + ((err && err.message) || name || 'unknown error'));
    }
  }

  function onDeclineClick() {
    const call = currentCall;
    if (!call || call.phase !== 'ringing') return;
    declineCall(call, 'Call declined');
  }

  function declineCall(call, message) {
    request('call.decline', { call_id: call.id }, { quiet: true });
    teardown(call);
    currentCall = null;
    showCallMessage(message);
    setCallState('idle');
  }

  function onRingStopped(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id || call.phase === 'connected') return;
    endCall(call, msg.reason === 'timeout' ? 'not answered in time' : text(msg.reason) || 'ring stopped');
  }

  // ---------------------------------------------------------------- connected call and WebRTC

  async function onConnected(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id) return;
    if (!call.stream) {
      request('call.hangup', { call_id: call.id }, { quiet: true });
      endCall(call, 'no microphone');
      return;
    }
    call.phase = 'connected';
    // A masked call: both parties offer to the server's bridge. (An ordinary agent call, which an admin's queues
    // may ring here, keeps the peer-to-peer roles: the caller offers, we answer.)
    call.serverMedia = msg.media === 'server';
    if (isObject(msg.peer) && text(msg.peer.name)) call.label = text(msg.peer.name);
    clearInterval(call.ringTimer);
    createPeer(call);
    renderConnected(call);
    startCallTimer(call);
    setCallState('connected');
    if (call.serverMedia || msg.offerer === true) await makeOffer(call);
  }

  function renderConnected(call) {
    ui.connectedCaller.textContent = call.label;
    ui.connectedListing.textContent = call.listing || '(no listing)';
    ui.connectedAudio.textContent = 'Connecting…';
    setMuteButton(false);
    ui.mute.disabled = false;
    ui.hangup.disabled = false;
  }

  function startCallTimer(call) {
    call.connectedAt = Date.now();
    const tick = () => {
      ui.callTimer.textContent = formatClock(Date.now() - call.connectedAt);
    };
    tick();
    call.callTimer = setInterval(tick, 500);
  }

  function createPeer(call) {
    const pc = new RTCPeerConnection({ iceServers: session.iceServers });
    call.pc = pc;
    hook.pc = pc;
    for (const track of call.stream.getAudioTracks()) pc.addTrack(track, call.stream);
    pc.addEventListener('icecandidate', (ev) => onLocalCandidate(call, ev.candidate));
    pc.addEventListener('track', (ev) => playRemoteAudio(ev));
    pc.addEventListener('connectionstatechange', () => onPeerStateChange(call));
  }

  async function makeOffer(call) {
    const pc = call.pc;
    try {
      await pc.setLocalDescription(await pc.createOffer());
    } catch (err) {
      if (currentCall === call) audioFailed(call, err.message || String(err));
      return;
    }
    if (currentCall !== call) return;
    call.offerSent = true;
    const sending = request('rtc.offer', { call_id: call.id, sdp: pc.localDescription.sdp }, { quiet: true });
    // Candidates gathered meanwhile follow the offer (the server accepts a leg's candidates only after its offer).
    flushLocalCandidates(call);
    const reply = await sending;
    if (!reply.success && currentCall === call) audioFailed(call, (reply.error && reply.error.message) || 'refused');
  }

  // Without an audio path the call cannot go on: say why and end it rather than leave both sides in silence.
  function audioFailed(call, reason) {
    showStatus('Audio setup failed: ' + reason, 'error');
    request('call.hangup', { call_id: call.id }, { quiet: true });
    endCall(call, 'audio setup failed');
  }

  function onLocalCandidate(call, candidate) {
    if (currentCall !== call) return;
    const init = candidate ? candidate.toJSON() : null; // null: no more candidates
    if (call.serverMedia && !call.offerSent) {
      call.localCandidates.push(init);
      return;
    }
    request('rtc.candidate', { call_id: call.id, candidate: init }, { quiet: true });
  }

  function flushLocalCandidates(call) {
    const queued = call.localCandidates;
    call.localCandidates = [];
    for (const init of queued) request('rtc.candidate', { call_id: call.id, candidate: init }, { quiet: true });
  }

  function playRemoteAudio(ev) {
    const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
    if (ui.remoteAudio.srcObject !== stream) ui.remoteAudio.srcObject = stream;
    ui.remoteAudio.play().catch(() => { /* autoplay refused; the autoplay attribute retries */ });
  }

  const PEER_STATES = {
    new: 'Connecting…',
    connecting: 'Connecting…',
    connected: 'Connected',
    disconnected: 'Interrupted, trying to recover…',
    failed: 'Failed',
    closed: 'Closed',
  };

  function onPeerStateChange(call) {
    if (currentCall !== call || !call.pc) return;
    const state = call.pc.connectionState;
    root.dataset.peerState = state;
    ui.connectedAudio.textContent = PEER_STATES[state] || state;
    if (state === 'failed') showStatus('The audio connection failed. Hang up and ask the buyer to call again.', 'error');
    else if (state === 'connected') clearStatus();
  }

  // The server's answer to our offer (masked call), or the relayed answer in a peer-to-peer call.
  async function onRemoteAnswer(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id || !call.pc || typeof msg.sdp !== 'string') return;
    try {
      await call.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      await flushRemoteCandidates(call);
    } catch (err) {
      if (currentCall === call) audioFailed(call, err.message || String(err));
    }
  }

  // Peer-to-peer calls only (an admin's agent queues): the caller's offer, relayed.
  async function onRemoteOffer(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id || !call.pc || call.serverMedia || typeof msg.sdp !== 'string') return;
    const pc = call.pc;
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await flushRemoteCandidates(call);
      await pc.setLocalDescription(await pc.createAnswer());
    } catch (err) {
      if (currentCall === call) reportFault('Audio setup failed', err);
      return;
    }
    if (currentCall !== call) return;
    await request('rtc.answer', { call_id: call.id, sdp: pc.localDescription.sdp });
  }

  async function onRemoteCandidate(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id) return;
    if (!call.pc || !call.pc.remoteDescription) {
      call.remoteCandidates.push(msg.candidate);
      return;
    }
    await addCandidate(call.pc, msg.candidate);
  }

  async function flushRemoteCandidates(call) {
    const queued = call.remoteCandidates;
    call.remoteCandidates = [];
    for (const candidate of queued) await addCandidate(call.pc, candidate);
  }

  async function addCandidate(pc, candidate) {
    try {
      if (candidate) await pc.addIceCandidate(candidate);
      else await pc.addIceCandidate();
    } catch (err) {
      console.warn('talk seller: ignored an ICE candidate', err);
    }
  }

  function setMuteButton(muted) {
    ui.mute.setAttribute('aria-pressed', String(muted));
    ui.mute.textContent = muted ? 'Unmute' : 'Mute';
  }

  function toggleMute() {
    const call = currentCall;
    if (!call || !call.stream) return;
    call.muted = !call.muted;
    // A disabled track sends silence but keeps the connection, so unmuting is instant.
    for (const track of call.stream.getAudioTracks()) track.enabled = !call.muted;
    setMuteButton(call.muted);
  }

  async function hangUp() {
    const call = currentCall;
    if (!call) return;
    ui.hangup.disabled = true;
    const reply = await request('call.hangup', { call_id: call.id });
    if (!reply.success && currentCall === call) endCall(call, reply.error.code);
  }

  const END_REASONS = {
    'completed': 'Call ended',
    'caller-cancelled': 'The buyer hung up',
    'caller-disconnected': 'The buyer was disconnected',
    'agent-disconnected': 'Call ended (connection lost)',
    'failed': 'The call failed',
  };

  function onCallEnded(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id) return;
    endCall(call, END_REASONS[msg.reason] || 'Call ended (' + text(msg.reason) + ')', true);
  }

  function endCall(call, reason, exact) {
    if (currentCall !== call) return;
    teardown(call);
    currentCall = null;
    showCallMessage(exact ? reason : 'Call ended (' + reason + ')');
    setCallState('ended');
  }

  function teardown(call) {
    stopRinging();
    clearInterval(call.ringTimer);
    clearInterval(call.callTimer);
    if (call.pc) {
      try {
        call.pc.close();
      } catch (err) { /* already closed */ }
      call.pc = null;
    }
    // hook.pc stays: a test may still read the last call's final stats.
    stopStream(call.stream);
    call.stream = null;
    ui.remoteAudio.srcObject = null;
    delete root.dataset.callId;
    delete root.dataset.peerState;
  }

  function stopStream(stream) {
    if (!stream) return;
    for (const track of stream.getTracks()) track.stop();
  }

  // ---------------------------------------------------------------- voicemail (static/voicemail.js)

  function listingText(info) {
    const label = text(info.label);
    const sku = text(info.listing);
    return label && sku ? label + ' (' + sku + ')' : label || sku || 'No listing';
  }

  // A buyer is only ever an alias; the listing is the seller's own text, its label comes with voicemail.list.
  function describeVoicemail(info) {
    const alias = text(info.buyer_alias) || 'Buyer';
    return { title: alias, detail: listingText(info), label: 'Voicemail from ' + alias };
  }

  // ---------------------------------------------------------------- wiring

  function onBrowserOnline() {
    if (session.reconnectTimer) connect();
  }

  function startInbox() {
    if (typeof window.talkVoicemailInbox !== 'function') {
      console.warn('talk seller: voicemail.js did not load; no voicemail inbox');
      return;
    }
    inbox = window.talkVoicemailInbox({
      root,
      list: ui.voicemailList,
      count: ui.voicemailCount,
      empty: ui.voicemailEmpty,
      request,
      describe: describeVoicemail,
      announce: (info) => 'New voicemail from ' + (text(info.buyer_alias) || 'a buyer'),
      showStatus,
      reportFault,
    });
  }

  function start() {
    ui.available.addEventListener('change', onAvailableChange);
    ui.answer.addEventListener('click', () => {
      answerCall().catch((err) => reportFault('Answering', err));
    });
    ui.decline.addEventListener('click', onDeclineClick);
    ui.mute.addEventListener('click', toggleMute);
    ui.hangup.addEventListener('click', () => {
      hangUp().catch((err) => reportFault('Hanging up', err));
    });
    document.addEventListener('pointerdown', unlockAudio, { passive: true });
    window.addEventListener('online', onBrowserOnline);
    setCallState('idle');
    startInbox();
    connect();
  }

  start();
})();
