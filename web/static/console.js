// Talk agent console: speaks the /ws/v1 signaling protocol (agent role, see docs/protocol.md),
// rings on incoming calls and runs the agent's side of the WebRTC audio call. The voicemail inbox is
// static/voicemail.js, loaded before this file.
// No framework and no build step: this file is served as is.
(function () {
  'use strict';

  const root = document.getElementById('console');
  if (!root) return;

  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;
  const STATUS_CLEAR_MS = 10000;
  const RING_CYCLE_MS = 3000;
  const RING_VOLUME = 0.15;
  const DEFAULT_RING_TIMEOUT_S = 20;
  const CLOSE_REPLACED = 4409;
  const JOURNEY_WAIT_MS = 10000; // call.incoming without a journey: call.journey should follow well within this

  const ui = {
    connection: byId('connection'),
    connectionText: byId('connection-text'),
    accountName: byId('account-name'),
    banner: byId('banner'),
    bannerText: byId('banner-text'),
    bannerAction: byId('banner-action'),
    available: byId('available'),
    missedNote: byId('missed-note'),
    queues: byId('queues'),
    panelWaiting: byId('panel-waiting'),
    waitingText: byId('waiting-text'),
    callMessage: byId('call-message'),
    panelIncoming: byId('panel-incoming'),
    incomingQueue: byId('incoming-queue'),
    incomingCaller: byId('incoming-caller'),
    incomingUrl: byId('incoming-url'),
    incomingTitle: byId('incoming-title'),
    ringCountdown: byId('ring-countdown'),
    answer: byId('answer'),
    decline: byId('decline'),
    panelConnected: byId('panel-connected'),
    connectedPeer: byId('connected-peer'),
    connectedQueue: byId('connected-queue'),
    connectedUrl: byId('connected-url'),
    connectedTitle: byId('connected-title'),
    callTimer: byId('call-timer'),
    mute: byId('mute'),
    hangup: byId('hangup'),
    remoteAudio: byId('remote-audio'),
    statusLine: byId('status-line'),
    dispositionField: byId('disposition-field'),
    disposition: byId('disposition'),
    dispositionStatus: byId('disposition-status'),
    journey: byId('journey'),
    journeyContext: byId('journey-context'),
    journeyNote: byId('journey-note'),
    journeySourceBlock: byId('journey-source-block'),
    journeySource: byId('journey-source'),
    journeyReferrer: byId('journey-referrer'),
    journeyReferrerUrl: byId('journey-referrer-url'),
    journeyPagesBlock: byId('journey-pages-block'),
    journeyNoPages: byId('journey-no-pages'),
    journeyPages: byId('journey-pages'),
    earlierCallsBlock: byId('earlier-calls-block'),
    earlierCalls: byId('earlier-calls'),
    earlierCallsOrder: byId('earlier-calls-order'),
    voicemailCount: byId('voicemail-count'),
    voicemailEmpty: byId('voicemail-empty'),
    voicemailList: byId('voicemails'),
  };

  const pageTitle = document.title;

  const session = {
    ws: null,
    nextId: 1,
    pending: new Map(), // id -> {type, fields, resolve}
    ready: false, // hello succeeded on the current socket
    opened: false, // the current socket reached "open" (a failed upgrade never does)
    reconnectDelay: RECONNECT_MIN_MS,
    reconnectTimer: null,
    stopped: false, // replaced or logged out: reconnecting would only fight another tab or fail
    replaced: false, // the server announced session.replaced
    iceServers: [],
    ringTimeout: DEFAULT_RING_TIMEOUT_S,
    available: false, // as last confirmed by the server
    wantAvailable: false, // the agent's intent, re-asserted after a reconnect
    dispositions: new Map(), // queue name -> its dispositions, from hello (call.incoming carries them too)
  };

  // The one call this console handles at a time, or null.
  // {id, queue, page, caller, phase: 'ringing'|'answering'|'connected', stream, pc,
  //  pendingCandidates, ringTimer, ringDeadline, callTimer, connectedAt, muted}
  let currentCall = null;

  // The call the journey panel and the disposition control describe: the ringing or current call and, after it has
  // ended (or was declined or missed), the last one, until the next call rings. Outlives currentCall on purpose:
  // a late call.journey still lands, and a disposition may be set after the call ended.
  // {id, journeyTimer, dispositions, answered, saved, savedSeq, seq}
  let shownCall = null;

  // The voicemail inbox of the agent's queues; created in start(), null if static/voicemail.js did not load.
  let inbox = null;

  let statusTimer = null;

  function byId(id) {
    return document.getElementById(id);
  }

  // ---------------------------------------------------------------- small UI helpers

  function showStatus(text, kind) {
    clearTimeout(statusTimer);
    ui.statusLine.textContent = text;
    ui.statusLine.dataset.kind = kind || 'info';
    // Non-blocking: the line clears itself so stale errors don't linger.
    statusTimer = setTimeout(clearStatus, STATUS_CLEAR_MS);
  }

  function clearStatus() {
    ui.statusLine.textContent = '';
    delete ui.statusLine.dataset.kind;
  }

  function reportFault(context, err) {
    const detail = err && err.message ? err.message : String(err);
    console.warn('talk console:', context, err);
    showStatus(context + ': ' + detail, 'error');
  }

  function setConnection(kind, text) {
    root.dataset.connection = kind;
    ui.connection.dataset.connection = kind;
    ui.connectionText.textContent = text;
    updateWaitingText();
  }

  function showBanner(text, actionLabel, onAction) {
    ui.bannerText.textContent = text;
    ui.bannerAction.hidden = !actionLabel;
    ui.bannerAction.textContent = actionLabel || '';
    ui.bannerAction.onclick = onAction || null;
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
  }

  function updateWaitingText() {
    let text;
    if (!session.ready) text = 'Not connected to the server.';
    else if (session.available) text = 'Waiting for calls…';
    else text = 'You are unavailable. Tick Available to receive calls.';
    ui.waitingText.textContent = text;
  }

  function showCallMessage(text) {
    ui.callMessage.textContent = text;
    ui.callMessage.hidden = !text;
  }

  function renderQueues(queues) {
    ui.queues.replaceChildren();
    if (!queues.length) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = 'No queues assigned';
      ui.queues.append(li);
      return;
    }
    for (const queue of queues) {
      const li = document.createElement('li');
      li.textContent = queue.display_name || queue.name;
      li.dataset.queue = queue.name;
      ui.queues.append(li);
    }
  }

  // Page URLs come from the caller's browser: shown as text, and only http(s) ever becomes a link.
  function renderPageLink(anchor, url) {
    anchor.textContent = url || '(unknown)';
    if (isWebUrl(url)) anchor.href = url;
    else anchor.removeAttribute('href');
  }

  function isWebUrl(url) {
    if (typeof url !== 'string' || !url) return false;
    try {
      const parsed = new URL(url);
      return parsed.protocol === 'http:' || parsed.protocol === 'https:';
    } catch (err) {
      return false;
    }
  }

  function queueLabel(queue) {
    return (queue && (queue.display_name || queue.name)) || 'Unknown queue';
  }

  function formatDuration(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const pad = (n) => String(n).padStart(2, '0');
    return pad(Math.floor(total / 60)) + ':' + pad(total % 60);
  }

  // One place decides which panel shows, so data-call-state and the view never disagree.
  function setCallState(callState) {
    root.dataset.callState = callState;
    ui.panelIncoming.hidden = callState !== 'ringing';
    ui.panelConnected.hidden = callState !== 'connected';
    ui.panelWaiting.hidden = callState === 'ringing' || callState === 'connected';
    if (callState === 'ringing') document.title = 'Incoming call · ' + pageTitle;
    else if (callState === 'connected') document.title = 'In call · ' + pageTitle;
    else document.title = pageTitle;
    updateJourneyContext(callState);
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
    // Events from a socket we have already given up on must not touch the current one.
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
    // The server ends our call as agent-disconnected; don't leave a dead call on screen.
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
    // The upgrade failed: possibly a 401 because the login session expired.
    checkSession().then((loggedIn) => (loggedIn ? scheduleReconnect() : onLoggedOut()));
  }

  function scheduleReconnect() {
    if (session.stopped || session.reconnectTimer) return;
    // Jitter spreads out reconnects of many consoles after a server restart.
    const delay = session.reconnectDelay * (0.8 + Math.random() * 0.4);
    session.reconnectDelay = Math.min(session.reconnectDelay * 2, RECONNECT_MAX_MS);
    setConnection('offline', 'Offline, retrying in ' + Math.ceil(delay / 1000) + ' s');
    session.reconnectTimer = setTimeout(connect, delay);
  }

  // Resolves true unless the server clearly says we are no longer logged in.
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

  // Sends one client message; resolves with its `result` frame. Never rejects, so callers can't
  // leak unhandled rejections: a lost connection resolves as {success: false, error: {code: 'disconnected'}}.
  // `options.quiet`: the caller shows the error itself, so the status line stays out of it.
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
    // No status per request: the connection indicator already says what happened.
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
    // Errors about a call we have already left (late candidates, races) are noise for the agent.
    if (fields && fields.call_id && (!currentCall || currentCall.id !== fields.call_id)) return;
    const err = error || {};
    showStatus(type + ' failed: ' + (err.message || err.code || 'unknown error'), 'error');
  }

  const eventHandlers = {
    'result': onResult,
    'call.incoming': onIncoming,
    'call.journey': onJourney,
    'call.ring_stopped': onRingStopped,
    'call.connected': onConnected,
    'call.ended': onCallEnded,
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
    if (!msg || typeof msg !== 'object') return;
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
    if (result.account) ui.accountName.textContent = result.account.name || result.account.email || '';
    const queues = Array.isArray(result.queues) ? result.queues : [];
    renderQueues(queues);
    session.dispositions = new Map(queues.map((queue) => [queue && queue.name, queue && queue.dispositions]));
    hideBanner();
    setConnection('online', 'Connected');
    ui.available.disabled = false;
    // A dropped connection shouldn't silently take an agent off duty.
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
    // Ticking the box is the user gesture browsers require before a page may play sound.
    unlockAudio();
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
    else setAvailable(session.available); // undo the tick: the server did not change anything
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
      // Two close tones beat against each other like a phone bell, unlike music or a page sound.
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

  // A double ring (on .4 s, off .2 s, on .4 s) per cycle; short ramps avoid clicks.
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

  function onIncoming(msg) {
    if (currentCall) {
      // The server should not ring a busy console; if it does, pass the call on rather than drop ours.
      if (currentCall.id !== msg.call_id) request('call.decline', { call_id: msg.call_id });
      return;
    }
    const call = {
      id: msg.call_id,
      queue: msg.queue || {},
      page: msg.page || {},
      caller: msg.caller || {},
      phase: 'ringing',
      stream: null,
      pc: null,
      pendingCandidates: [],
      ringTimer: null,
      callTimer: null,
      muted: false,
    };
    currentCall = call;
    root.dataset.callId = call.id;
    showCallMessage('');
    renderIncoming(call);
    showCallDetails(msg);
    startRingCountdown(call, msg.ring_timeout || session.ringTimeout);
    startRinging();
    setCallState('ringing');
    ui.answer.focus();
  }

  function renderIncoming(call) {
    ui.incomingQueue.textContent = queueLabel(call.queue);
    ui.incomingCaller.textContent = call.caller.label || 'Caller';
    renderPageLink(ui.incomingUrl, call.page.url);
    ui.incomingTitle.textContent = call.page.title || '(no title)';
    ui.answer.disabled = false;
    ui.decline.disabled = false;
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
    unlockAudio();
    let stream;
    try {
      stream = await openMicrophone();
    } catch (err) {
      if (currentCall !== call) return;
      declineCall(call, err.message + ' The call was declined.');
      return;
    }
    if (currentCall !== call) {
      // The call ended while the browser asked for the microphone.
      stopStream(stream);
      return;
    }
    call.stream = stream;
    const reply = await request('call.answer', { call_id: call.id });
    if (!reply.success && currentCall === call) endCall(call, 'not answered: ' + reply.error.code);
  }

  // The microphone comes before call.answer: a caller must never be connected to an agent who can't speak.
  // Throws an Error whose message is meant for the agent.
  async function openMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('This page cannot use a microphone (it needs HTTPS).');
    }
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      throw new Error(microphoneErrorText(err));
    }
  }

  function microphoneErrorText(err) {
    const name = err && err.name;
    if (name === 'NotAllowedError' || name === 'SecurityError') {
      return 'Microphone access was denied. Allow the microphone for this site to answer calls.';
    }
    if (name === 'NotFoundError' || name === 'OverconstrainedError') {
      return 'No microphone was found. Connect one to answer calls.';
    }
    if (name === 'NotReadableError') {
      return 'The microphone is in use by another application.';
    }
    return 'Could not start the microphone: ' + ((err && err.message) || name || 'unknown error');
  }

  function onDeclineClick() {
    const call = currentCall;
    if (!call || call.phase !== 'ringing') return;
    declineCall(call, 'Call declined');
  }

  function declineCall(call, message) {
    request('call.decline', { call_id: call.id });
    teardown(call);
    currentCall = null;
    showCallMessage(message);
    setCallState('idle');
  }

  function onRingStopped(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id || call.phase === 'connected') return;
    endCall(call, msg.reason || 'ring stopped');
  }

  // ---------------------------------------------------------------- connected call and WebRTC

  function onConnected(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id) return;
    if (!call.stream) {
      // Should not happen (we answer only with a microphone); hang up rather than sit in silence.
      request('call.hangup', { call_id: call.id });
      endCall(call, 'no microphone');
      return;
    }
    call.phase = 'connected';
    clearInterval(call.ringTimer);
    createPeer(call);
    renderConnected(call, msg.peer);
    startCallTimer(call);
    setCallState('connected');
    onAnswered(call.id);
  }

  function renderConnected(call, peer) {
    ui.connectedPeer.textContent = peer && peer.name ? 'with ' + peer.name : '';
    ui.connectedPeer.hidden = !ui.connectedPeer.textContent;
    ui.connectedQueue.textContent = queueLabel(call.queue);
    renderPageLink(ui.connectedUrl, call.page.url);
    ui.connectedTitle.textContent = call.page.title || '(no title)';
    setMuteButton(false);
    ui.mute.disabled = false;
    ui.hangup.disabled = false;
  }

  function startCallTimer(call) {
    call.connectedAt = Date.now();
    const tick = () => {
      ui.callTimer.textContent = formatDuration(Date.now() - call.connectedAt);
    };
    tick();
    call.callTimer = setInterval(tick, 500);
  }

  // The agent never offers (offerer: false): we add the mic and wait for the caller's rtc.offer.
  function createPeer(call) {
    const pc = new RTCPeerConnection({ iceServers: session.iceServers });
    call.pc = pc;
    for (const track of call.stream.getAudioTracks()) pc.addTrack(track, call.stream);
    pc.addEventListener('icecandidate', (ev) => sendCandidate(call, ev.candidate));
    pc.addEventListener('track', (ev) => playRemoteAudio(ev));
    pc.addEventListener('connectionstatechange', () => onPeerStateChange(call));
  }

  function sendCandidate(call, candidate) {
    if (currentCall !== call) return;
    // null tells the caller we have no more candidates.
    request('rtc.candidate', { call_id: call.id, candidate: candidate ? candidate.toJSON() : null });
  }

  function playRemoteAudio(ev) {
    const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
    if (ui.remoteAudio.srcObject !== stream) ui.remoteAudio.srcObject = stream;
    ui.remoteAudio.play().catch(() => { /* autoplay refused; autoplay attribute retries */ });
  }

  function onPeerStateChange(call) {
    if (currentCall !== call || !call.pc) return;
    const state = call.pc.connectionState;
    root.dataset.peerState = state;
    if (state === 'failed') showStatus('The audio connection failed. Hang up and ask the caller to call again.', 'error');
    else if (state === 'disconnected') showStatus('The audio connection was interrupted, trying to recover…', 'error');
    else if (state === 'connected') clearStatus();
  }

  async function onRemoteOffer(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id || !call.pc) return;
    const pc = call.pc;
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await flushCandidates(call);
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
    // Candidates can only be added once the offer is applied; keep earlier ones until then.
    if (!call.pc || !call.pc.remoteDescription) {
      call.pendingCandidates.push(msg.candidate);
      return;
    }
    await addCandidate(call.pc, msg.candidate);
  }

  async function flushCandidates(call) {
    const candidates = call.pendingCandidates;
    call.pendingCandidates = [];
    for (const candidate of candidates) await addCandidate(call.pc, candidate);
  }

  async function addCandidate(pc, candidate) {
    try {
      // No argument marks the end of the caller's candidates.
      if (candidate) await pc.addIceCandidate(candidate);
      else await pc.addIceCandidate();
    } catch (err) {
      // One bad candidate shouldn't end the call; the others may still connect.
      console.warn('talk console: ignored an ICE candidate', err);
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
    // Disabling the track sends silence but keeps the connection, so unmuting is instant.
    for (const track of call.stream.getAudioTracks()) track.enabled = !call.muted;
    setMuteButton(call.muted);
  }

  async function hangUp() {
    const call = currentCall;
    if (!call) return;
    ui.hangup.disabled = true;
    const reply = await request('call.hangup', { call_id: call.id });
    // Normally call.ended follows; if the server refused, don't leave the agent stuck in a dead call.
    if (!reply.success && currentCall === call) endCall(call, reply.error.code);
  }

  function onCallEnded(msg) {
    const call = currentCall;
    if (!call || call.id !== msg.call_id) return;
    endCall(call, msg.reason || 'ended');
  }

  function endCall(call, reason) {
    if (currentCall !== call) return;
    teardown(call);
    currentCall = null;
    showCallMessage('Call ended (' + reason + ')');
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

  // ---------------------------------------------------------------- journey panel and disposition

  // Labels for the server's source kinds; an unknown kind is shown as sent (as text).
  const SOURCE_KINDS = {
    direct: 'Direct',
    referral: 'Referral',
    search: 'Search',
    social: 'Social',
    campaign: 'Campaign',
    paid: 'Paid',
  };

  const END_REASONS = {
    'completed': 'Completed',
    'caller-cancelled': 'Caller hung up before an answer',
    'no-agent': 'No agent available',
    'agent-declined': 'Declined by every agent',
    'caller-disconnected': 'Caller disconnected',
    'agent-disconnected': 'Agent disconnected',
    'failed': 'Failed',
  };

  // A new call rings: the panel and the disposition control now describe it, and nothing of the last call remains.
  function showCallDetails(msg) {
    if (shownCall) clearTimeout(shownCall.journeyTimer);
    const call = {
      id: msg.call_id,
      journeyTimer: null,
      dispositions: dispositionsOf(msg),
      answered: false,
      saved: '',
      savedSeq: 0,
      seq: 0,
    };
    shownCall = call;
    renderDisposition(call);
    if (isObject(msg.journey)) {
      renderJourney(msg.journey);
    } else {
      setJourneyState('loading', 'Loading the journey…');
      call.journeyTimer = setTimeout(() => {
        if (shownCall === call && ui.journey.dataset.state === 'loading') {
          setJourneyState('unavailable', 'The journey could not be loaded.');
        }
      }, JOURNEY_WAIT_MS);
    }
    ui.journey.hidden = false;
  }

  function onJourney(msg) {
    const call = shownCall;
    if (!call || call.id !== msg.call_id || !isObject(msg.journey)) return;
    clearTimeout(call.journeyTimer);
    renderJourney(msg.journey);
  }

  function updateJourneyContext(callState) {
    let text = '· last call';
    if (callState === 'ringing') text = '· incoming call';
    else if (callState === 'connected') text = '· this call';
    ui.journeyContext.textContent = text;
  }

  function isObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  // Untrusted values as display text: strings as they are, nothing for null/undefined.
  function text(value) {
    if (value === null || value === undefined) return '';
    return typeof value === 'string' ? value : String(value);
  }

  function setJourneyState(state, note) {
    ui.journey.dataset.state = state;
    ui.journey.dataset.pages = '0';
    ui.journeyNote.textContent = note || '';
    ui.journeyNote.hidden = !note;
    ui.journeySourceBlock.hidden = true;
    ui.journeyPagesBlock.hidden = true;
    ui.earlierCallsBlock.hidden = true;
    ui.journeySource.textContent = '';
    ui.journeyReferrer.hidden = true;
    ui.journeyReferrerUrl.textContent = '';
    ui.journeyReferrerUrl.removeAttribute('href');
    ui.journeyPages.replaceChildren();
    ui.earlierCalls.replaceChildren();
    delete ui.journey.dataset.tracked;
  }

  function renderJourney(journey) {
    const pages = Array.isArray(journey.pages) ? journey.pages.filter(isObject) : [];
    const source = isObject(journey.source) ? journey.source : null;
    const earlier = Array.isArray(journey.earlier_calls) ? journey.earlier_calls.filter(isObject) : [];
    const tracked = pages.length > 0 || source !== null;
    setJourneyState('loaded', tracked ? '' : 'No journey (the visitor has not consented to tracking)');
    ui.journey.dataset.tracked = String(tracked);
    if (tracked) {
      renderSource(source);
      renderPages(pages);
    }
    // Without consent the server cannot know earlier calls, so "First call" would claim what nobody knows.
    if (tracked || earlier.length) renderEarlierCalls(earlier);
  }

  function renderSource(source) {
    ui.journeySourceBlock.hidden = false;
    if (!source) {
      ui.journeySource.textContent = 'Unknown';
      ui.journeyReferrer.hidden = true;
      return;
    }
    const kind = text(source.kind);
    const parts = [SOURCE_KINDS[kind] || kind || 'Unknown'];
    const sourceMedium = [text(source.source), text(source.medium)].filter(Boolean).join(' / ');
    if (sourceMedium) parts.push(sourceMedium);
    if (text(source.campaign)) parts.push(text(source.campaign));
    ui.journeySource.textContent = parts.join(' · ');
    const referrer = text(source.referrer);
    ui.journeyReferrer.hidden = !referrer;
    if (referrer) renderPageLink(ui.journeyReferrerUrl, referrer);
  }

  // Oldest first, as the server sends them: the last row is the page the caller called from.
  function renderPages(pages) {
    ui.journeyPagesBlock.hidden = false;
    ui.journeyNoPages.hidden = pages.length > 0;
    const rows = pages.map((page) => {
      const li = document.createElement('li');
      li.className = 'journey-page';

      const head = document.createElement('div');
      head.className = 'journey-page-head';
      const title = document.createElement('span');
      title.className = 'journey-page-title';
      title.textContent = text(page.title) || '(no title)';
      const duration = document.createElement('span');
      duration.className = 'journey-page-time';
      const shown = formatTimeOnPage(page.time_on_page);
      const label = document.createElement('span');
      label.className = 'visually-hidden';
      label.textContent = shown ? 'Time on page: ' : 'Time on page unknown';
      duration.append(label);
      if (shown) {
        duration.append(shown);
      } else {
        const dash = document.createElement('span');
        dash.setAttribute('aria-hidden', 'true');
        dash.textContent = '–';
        duration.append(dash);
        duration.classList.add('journey-page-time-unknown');
      }
      head.append(title, duration);

      const url = document.createElement('a');
      url.className = 'page-url journey-page-url';
      url.rel = 'noopener noreferrer';
      url.target = '_blank';
      renderPageLink(url, text(page.url));
      url.title = text(page.url); // the list clamps long URLs to two lines

      li.append(head, url);
      const at = formatClock(page.ts);
      if (at) {
        const time = document.createElement('time');
        time.className = 'journey-page-at';
        time.dateTime = text(page.ts);
        time.textContent = at;
        li.append(time);
      }
      return li;
    });
    ui.journeyPages.replaceChildren(...rows);
    ui.journey.dataset.pages = String(rows.length);
    // The newest pages matter most: keep the end of a long list in view.
    ui.journeyPages.scrollTop = ui.journeyPages.scrollHeight;
  }

  function renderEarlierCalls(calls) {
    ui.earlierCallsBlock.hidden = false;
    ui.earlierCallsOrder.hidden = calls.length < 2;
    if (!calls.length) {
      const li = document.createElement('li');
      li.className = 'muted earlier-calls-empty';
      li.textContent = 'First call';
      ui.earlierCalls.replaceChildren(li);
      return;
    }
    // Oldest first, like the pages; entries without a readable date keep their place at the end.
    const sorted = calls
      .map((call, index) => ({ call, index, time: Date.parse(text(call.created_at)) }))
      .sort((a, b) => {
        const aKnown = !Number.isNaN(a.time);
        const bKnown = !Number.isNaN(b.time);
        if (aKnown && bKnown && a.time !== b.time) return a.time - b.time;
        if (aKnown !== bKnown) return aKnown ? -1 : 1;
        return a.index - b.index;
      })
      .map((entry) => entry.call);
    const rows = sorted.map((call) => {
      const li = document.createElement('li');
      li.className = 'earlier-call';
      const when = document.createElement('time');
      when.className = 'earlier-call-when';
      when.dateTime = text(call.created_at);
      when.textContent = formatDateTime(call.created_at) || 'Unknown time';
      const reason = document.createElement('span');
      reason.className = 'earlier-call-reason';
      const code = text(call.end_reason);
      reason.textContent = END_REASONS[code] || code || 'Not ended';
      const agent = document.createElement('span');
      agent.className = 'earlier-call-agent';
      agent.textContent = text(call.agent) || 'No agent';
      li.append(when, reason, agent);
      return li;
    });
    ui.earlierCalls.replaceChildren(...rows);
  }

  // "12 s", "3 min", "1 h 5 min"; null when unknown.
  function formatTimeOnPage(seconds) {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return null;
    const secs = Math.round(seconds);
    if (secs < 60) return secs + ' s';
    const mins = Math.round(seconds / 60);
    if (mins < 60) return mins + ' min';
    const hours = Math.floor(mins / 60);
    return hours + ' h' + (mins % 60 ? ' ' + (mins % 60) + ' min' : '');
  }

  function parseDate(value) {
    if (typeof value !== 'string' || !value) return null;
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function formatClock(value) {
    const date = parseDate(value);
    return date ? date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }) : '';
  }

  function formatDateTime(value) {
    const date = parseDate(value);
    return date ? date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '';
  }

  // The queue's dispositions: from call.incoming, else from the queue as hello described it.
  function dispositionsOf(msg) {
    let list = msg.dispositions;
    if (!Array.isArray(list)) list = session.dispositions.get(msg.queue && msg.queue.name);
    if (!Array.isArray(list)) return [];
    const unique = [];
    for (const item of list) {
      if (typeof item === 'string' && item && !unique.includes(item)) unique.push(item);
    }
    return unique;
  }

  // Shown once the call is answered, and kept after it ends; a call that was never answered takes none.
  function renderDisposition(call) {
    const options = [new Option('— choose —', '')];
    for (const value of call.dispositions) options.push(new Option(value, value));
    ui.disposition.replaceChildren(...options);
    ui.disposition.value = call.saved;
    setDispositionStatus('', '');
    ui.dispositionField.hidden = !call.answered || !call.dispositions.length;
  }

  function onAnswered(callId) {
    const call = shownCall;
    if (!call || call.id !== callId) return;
    call.answered = true;
    ui.dispositionField.hidden = !call.dispositions.length;
  }

  function setDispositionStatus(state, message) {
    ui.dispositionStatus.textContent = message;
    if (state) ui.dispositionStatus.dataset.state = state;
    else delete ui.dispositionStatus.dataset.state;
  }

  async function onDispositionChange() {
    const call = shownCall;
    if (!call || !call.answered) return;
    const value = ui.disposition.value;
    if (!value) {
      // The protocol has no "unset": back to what is stored.
      ui.disposition.value = call.saved;
      return;
    }
    const seq = ++call.seq;
    setDispositionStatus('saving', 'Saving…');
    const reply = await request('call.disposition', { call_id: call.id, disposition: value }, { quiet: true });
    if (shownCall !== call) return; // the next call rang meanwhile
    if (reply.success && seq > call.savedSeq) {
      call.saved = value;
      call.savedSeq = seq;
    }
    if (seq !== call.seq) return; // a newer choice is on its way; its reply speaks
    if (reply.success) {
      setDispositionStatus('saved', 'Saved');
    } else {
      ui.disposition.value = call.saved;
      const err = reply.error || {};
      setDispositionStatus('error', 'Not saved: ' + (err.message || err.code || 'unknown error'));
    }
  }

  // ---------------------------------------------------------------- voicemail inbox (static/voicemail.js)

  // An agent queue's voicemail: the caller is anonymous ("Caller"), so the queue is what tells them apart. The queue
  // comes with voicemail.list (voicemail.new lacks it; the inbox asks for the list then).
  function describeVoicemail(info) {
    const queue = text(info.queue);
    const label = text(info.label);
    const listing = text(info.listing);
    return {
      title: queue || 'Voicemail',
      detail: label && listing ? label + ' (' + listing + ')' : label || listing,
      label: queue ? 'Voicemail in ' + queue : 'Voicemail',
    };
  }

  function startInbox() {
    if (typeof window.talkVoicemailInbox !== 'function') {
      console.warn('talk console: voicemail.js did not load; no voicemail inbox');
      return;
    }
    inbox = window.talkVoicemailInbox({
      root,
      list: ui.voicemailList,
      count: ui.voicemailCount,
      empty: ui.voicemailEmpty,
      request,
      describe: describeVoicemail,
      announce: (info) => (text(info.queue) ? 'New voicemail in ' + text(info.queue) : 'New voicemail'),
      showStatus,
      reportFault,
    });
  }

  // ---------------------------------------------------------------- test hook

  // Browser tests read packet counters to prove audio flows both ways.
  async function stats() {
    const pc = currentCall && currentCall.pc;
    if (!pc) return null;
    try {
      const report = await pc.getStats();
      let inboundPackets = 0;
      let outboundPackets = 0;
      report.forEach((entry) => {
        if ((entry.kind || entry.mediaType) !== 'audio') return;
        if (entry.type === 'inbound-rtp') inboundPackets += entry.packetsReceived || 0;
        if (entry.type === 'outbound-rtp') outboundPackets += entry.packetsSent || 0;
      });
      return { inboundPackets, outboundPackets };
    } catch (err) {
      return null;
    }
  }

  window.talkConsole = { stats };

  // ---------------------------------------------------------------- wiring

  function onBrowserOnline() {
    // Skip the rest of the backoff once the network is back.
    if (session.reconnectTimer) connect();
  }

  function start() {
    ui.available.addEventListener('change', onAvailableChange);
    ui.answer.addEventListener('click', () => {
      answerCall().catch((err) => reportFault('Answering', err));
    });
    ui.decline.addEventListener('click', onDeclineClick);
    ui.mute.addEventListener('click', toggleMute);
    ui.disposition.addEventListener('change', () => {
      onDispositionChange().catch((err) => reportFault('Saving the disposition', err));
    });
    ui.hangup.addEventListener('click', () => {
      hangUp().catch((err) => reportFault('Hanging up', err));
    });
    // Any click is a user gesture that lets a later ring be heard, even if Available was restored by the server.
    document.addEventListener('pointerdown', unlockAudio, { passive: true });
    window.addEventListener('online', onBrowserOnline);
    setCallState('idle');
    startInbox();
    connect();
  }

  start();
})();
