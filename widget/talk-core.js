/*! Talk widget core: call button, call panel, signaling (docs/protocol.md) and WebRTC for the caller.
 * Loaded by talk.js, which puts the validated embed config in window.__talkCfg. Docs: widget/README.md */
(function (w, d) {
  'use strict';
  var P = 'talk: ';
  var cfg = w.__talkCfg;
  var prev = w.talk;
  // Without the loader's config there is nothing to talk to; a real `talk` (marked .v) means the core already runs.
  if (!cfg || (prev && prev.v)) return;

  var I18N = {
    en: {
      call: 'Call us', title: 'Voice call', connecting: 'Connecting…', waiting: 'Waiting in the queue…',
      queued: 'You are number {n} in the queue', ringing: 'Ringing…', connected: 'Connected', ended: 'Call ended',
      noAgent: 'Sorry, no one is available right now. Please try again later.',
      micDenied: 'Microphone access was denied. Please allow the microphone to call us.',
      noMic: 'No microphone was found.', unsupported: 'Your browser does not support voice calls.',
      lost: 'The connection was lost. Please try again.', failed: 'The call could not be connected. Please try again.',
      cancel: 'Cancel', mute: 'Mute', unmute: 'Unmute', hangup: 'Hang up', close: 'Close'
    },
    de: {
      call: 'Rufen Sie uns an', title: 'Sprachanruf', connecting: 'Verbindung wird hergestellt…',
      waiting: 'Sie sind in der Warteschlange…', queued: 'Sie sind Nummer {n} in der Warteschlange',
      ringing: 'Es klingelt…', connected: 'Verbunden', ended: 'Anruf beendet',
      noAgent: 'Leider ist gerade niemand erreichbar. Bitte versuchen Sie es später erneut.',
      micDenied: 'Der Zugriff auf das Mikrofon wurde verweigert. Bitte erlauben Sie das Mikrofon, um uns anzurufen.',
      noMic: 'Es wurde kein Mikrofon gefunden.', unsupported: 'Ihr Browser unterstützt keine Sprachanrufe.',
      lost: 'Die Verbindung wurde unterbrochen. Bitte versuchen Sie es erneut.',
      failed: 'Der Anruf konnte nicht verbunden werden. Bitte versuchen Sie es erneut.',
      cancel: 'Abbrechen', mute: 'Stummschalten', unmute: 'Stummschaltung aufheben', hangup: 'Auflegen', close: 'Schließen'
    },
    fr: {
      call: 'Appelez-nous', title: 'Appel vocal', connecting: 'Connexion…', waiting: 'En attente dans la file…',
      queued: 'Vous êtes numéro {n} dans la file d’attente', ringing: 'Ça sonne…', connected: 'Connecté',
      ended: 'Appel terminé', noAgent: 'Désolé, personne n’est disponible pour le moment. Veuillez réessayer plus tard.',
      micDenied: 'L’accès au microphone a été refusé. Autorisez le microphone pour nous appeler.',
      noMic: 'Aucun microphone n’a été trouvé.', unsupported: 'Votre navigateur ne prend pas en charge les appels vocaux.',
      lost: 'La connexion a été perdue. Veuillez réessayer.', failed: 'L’appel n’a pas pu être établi. Veuillez réessayer.',
      cancel: 'Annuler', mute: 'Couper le micro', unmute: 'Réactiver le micro', hangup: 'Raccrocher', close: 'Fermer'
    }
  };
  var T = I18N[cfg.lang] || I18N.en;

  // End reason (server reasons from the protocol, plus the widget's own) → message key; anything else is "Call ended".
  var REASON_TEXT = {
    'no-agent': 'noAgent', 'agent-declined': 'noAgent', 'microphone-denied': 'micDenied', 'no-microphone': 'noMic',
    unsupported: 'unsupported', 'connection-lost': 'lost', 'agent-disconnected': 'lost', 'caller-disconnected': 'lost',
    'connection-failed': 'failed', failed: 'failed', error: 'failed'
  };
  var ACTIVE = { connecting: 1, queued: 1, ringing: 1, connected: 1 };
  var TOKEN_KEY = 'talk_vt';

  var ui = null;        // elements, built once by mount()
  var call = null;      // the call in progress (a session object), null when there is none
  var info = { state: 'idle', position: null, reason: null, message: '' };
  var listeners = [];
  var muted = false;
  var dismissed = false;

  // ---------- small helpers ----------

  function warn(what, e) { console.warn(P + what, e === undefined ? '' : e); }

  // Every entry point from the browser (events, timers, promises) goes through this: the host page must never see
  // an exception from us.
  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { warn('internal error', e); }
    };
  }

  function h(tag, attrs, kids) {
    // setAttribute/append rather than innerHTML: works under Trusted Types CSPs and never parses config as HTML.
    var el = d.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    (kids || []).forEach(function (k) { el.append(k); });
    return el;
  }

  function cut(s, n) {
    s = String(s || '');
    if (s.length <= n) return s;
    s = s.slice(0, n);
    // Do not leave half a surrogate pair: the server counts code points and stores the text.
    return /[\ud800-\udbff]$/.test(s) ? s.slice(0, -1) : s;
  }

  function loadToken() {
    // Storage throws in some privacy modes and sandboxed iframes; the call then simply gets a fresh visitor.
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function saveToken(t) {
    try { if (typeof t === 'string' && t) localStorage.setItem(TOKEN_KEY, t); } catch (e) { /* see loadToken */ }
  }

  function mmss(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    return String(Math.floor(s / 60)).padStart(2, '0') + ':' + String(s % 60).padStart(2, '0');
  }

  function stopStream(stream) {
    if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
  }

  // ---------- state ----------

  function messageFor(state, position, reason) {
    if (state === 'queued') return position > 0 ? T.queued.replace('{n}', position) : T.waiting;
    if (state === 'ended') return T[REASON_TEXT[reason] || 'ended'];
    return T[state] || '';
  }

  function setState(state, position, reason) {
    position = state === 'queued' && position > 0 ? Number(position) : null;
    reason = state === 'ended' ? reason || null : null;
    info = { state: state, position: position, reason: reason, message: messageFor(state, position, reason) };
    dismissed = false;
    render();
    listeners.slice().forEach(function (fn) {
      try { fn({ state: info.state, position: info.position, reason: info.reason, message: info.message }); } catch (e) {
        warn('state listener failed', e);
      }
    });
  }

  // ---------- UI ----------

  var CSS = [
    ':host{all:initial}',
    '.w{position:relative;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f1f1f}',
    'button{font:inherit;cursor:pointer;border-radius:999px}',
    'button:focus-visible{outline:3px solid #1a73e8;outline-offset:2px}',
    '[hidden]{display:none!important}',
    '.call{display:inline-flex;align-items:center;gap:8px;border:0;padding:12px 20px;font-weight:600;',
    'background:var(--talk-bg);color:var(--talk-fg);box-shadow:0 4px 14px rgba(0,0,0,.25)}',
    '.call:disabled{opacity:.55;cursor:default}',
    '.call svg{width:18px;height:18px;fill:currentColor}',
    '.panel{position:absolute;bottom:calc(100% + 12px);right:0;box-sizing:border-box;width:280px;',
    'max-width:calc(100vw - 40px);padding:16px;background:#fff;border-radius:14px;box-shadow:0 8px 30px rgba(0,0,0,.22)}',
    '.left .panel{right:auto;left:0}',
    '.status{margin:0 0 10px}',
    '.timer{margin:0 0 10px;font-size:22px;font-variant-numeric:tabular-nums}',
    '.actions{display:flex;gap:8px}',
    '.actions button{flex:1;padding:8px 12px;border:1px solid #c4c7c5;background:#fff;color:#1f1f1f}',
    '.actions button[aria-pressed=true]{background:#e8eaed}',
    '.actions .end{background:#b3261e;border-color:#b3261e;color:#fff}'
  ].join('');

  var PHONE = 'M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25c1.1.37 2.3.57 3.6.57a1 1 0 0 1 1 1V20a1 1 0 0 1-1 1' +
    'A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z';

  function icon() {
    var ns = 'http://www.w3.org/2000/svg';
    var svg = d.createElementNS(ns, 'svg'), path = d.createElementNS(ns, 'path');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    path.setAttribute('d', PHONE);
    svg.append(path);
    return svg;
  }

  function styleHost(host) {
    // Inline !important so the shop's own CSS (e.g. `div {position: relative}`) cannot move or hide the widget.
    var side = cfg.position === 'bottom-left' ? 'left' : 'right';
    host.style.cssText = 'position:fixed!important;z-index:2147483000!important;bottom:20px!important;' +
      side + ':20px!important;top:auto!important;display:block!important;margin:0!important;padding:0!important;';
    // Colours go in as custom properties; talk.js already rejected anything that is not a plain CSS colour.
    host.style.setProperty('--talk-bg', cfg.color);
    host.style.setProperty('--talk-fg', cfg.textColor);
  }

  function addCss(root) {
    // A constructed stylesheet is not blocked by a shop CSP without 'unsafe-inline'; <style> is the fallback.
    try {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      root.append(h('style', {}, [CSS]));
    }
  }

  function actionButton(cls, text, onClick) {
    var b = h('button', { type: 'button', class: cls, hidden: '' }, [text]);
    b.addEventListener('click', safe(onClick));
    return b;
  }

  function mount() {
    var host = h('div', { id: 'talk-widget' });
    styleHost(host);
    var root = host.attachShadow({ mode: 'open' });
    addCss(root);
    var u = {
      host: host, root: root,
      status: h('p', { class: 'status', role: 'status', 'aria-live': 'polite' }),
      // role=timer is not announced every second (implicit aria-live=off), unlike the status line.
      timer: h('p', { class: 'timer', role: 'timer', hidden: '' }),
      cancel: actionButton('end', T.cancel, hangup),
      mute: actionButton('mute', T.mute, function () { mute(); }),
      hangup: actionButton('end', T.hangup, hangup),
      close: actionButton('close', T.close, function () { dismissed = true; render(); }),
      call: h('button', { type: 'button', class: 'call' }, [icon(), h('span', {}, [cfg.label || T.call])]),
      audio: h('audio', { autoplay: '' })
    };
    u.mute.setAttribute('aria-pressed', 'false');
    u.panel = h('section', { class: 'panel', 'aria-label': T.title, 'data-state': 'idle', hidden: '' }, [
      u.status, u.timer, h('div', { class: 'actions' }, [u.cancel, u.mute, u.hangup, u.close])
    ]);
    u.call.addEventListener('click', safe(function () { start(); }));
    var wrap = h('div', { class: 'w ' + (cfg.position === 'bottom-left' ? 'left' : 'right') }, [u.panel, u.call, u.audio]);
    root.append(wrap);
    d.body.append(host);
    ui = u;
  }

  function render() {
    if (!ui) return;
    var s = info.state, focused = ui.root.activeElement;
    ui.panel.setAttribute('data-state', s);
    ui.panel.hidden = s === 'idle' || dismissed;
    ui.status.textContent = info.message;
    ui.timer.hidden = s !== 'connected';
    ui.cancel.hidden = !(s === 'connecting' || s === 'queued' || s === 'ringing');
    ui.mute.hidden = ui.hangup.hidden = s !== 'connected';
    ui.close.hidden = s !== 'ended';
    ui.mute.setAttribute('aria-pressed', String(muted));
    ui.mute.textContent = muted ? T.unmute : T.mute;
    ui.call.disabled = !!ACTIVE[s];
    // Keep keyboard focus inside the widget when the focused button just disappeared (e.g. Cancel → Hang up).
    if (focused && (focused.hidden || focused.disabled || ui.panel.hidden)) {
      var next = [ui.cancel, ui.hangup, ui.close].filter(function (b) { return !b.hidden && !ui.panel.hidden; })[0];
      (next || ui.call).focus();
    }
  }

  function tick() {
    if (call && ui) ui.timer.textContent = mmss(Date.now() - call.t0);
  }

  // ---------- signaling ----------

  function request(s, type, fields) {
    // Resolves with the result object, or null on an error result or a closed socket: callers never need a catch.
    return new Promise(function (resolve) {
      if (!s.ws || s.ws.readyState !== 1) return resolve(null);
      var id = ++s.seq;
      s.pending[id] = { type: type, resolve: resolve };
      s.ws.send(JSON.stringify(Object.assign({ id: id, type: type }, fields)));
    });
  }

  function onResult(s, m) {
    var p = s.pending[m.id];
    if (!p) return warn('result for an unknown request', m.error || m.id);
    delete s.pending[m.id];
    if (m.success) return p.resolve(m.result || {});
    warn(p.type + ' failed: ' + (m.error && m.error.code), m.error && m.error.message);
    p.resolve(null);
  }

  var EVENTS = {
    'call.queued': function (s, m) { setState('queued', m.position); },
    'call.ringing': function () { setState('ringing'); },
    'call.connected': onConnected,
    'call.ended': function (s, m) { finish(s, m.reason || 'completed'); },
    'rtc.answer': onAnswer,
    'rtc.candidate': function (s, m) { addRemoteCandidate(s, m.candidate); }
  };

  function onMessage(s, data) {
    var m;
    try { m = JSON.parse(data); } catch (e) { return warn('unreadable message', e); }
    if (!m || typeof m !== 'object') return;
    if (m.type === 'result') return onResult(s, m);
    // A call's WebSocket carries only that call, so the first call_id seen identifies it; others are stale.
    if (s.done || (s.callId && m.call_id && m.call_id !== s.callId)) return;
    if (m.call_id && !s.callId) s.callId = m.call_id;
    if (EVENTS[m.type]) EVENTS[m.type](s, m);
  }

  function connect(s) {
    var ws;
    try { ws = s.ws = new WebSocket(cfg.wsUrl); } catch (e) { warn('cannot open WebSocket', e); return finish(s, 'connection-failed'); }
    ws.onopen = safe(function () { s.opened = true; hello(s); });
    ws.onmessage = safe(function (e) { onMessage(s, e.data); });
    // A close we did not ask for: before the upgrade it is a failure to connect, after it a lost connection.
    ws.onclose = safe(function () { finish(s, s.opened ? 'connection-lost' : 'connection-failed'); });
  }

  function hello(s) {
    var token = loadToken();
    var fields = token && token.length <= 200 ? { visitor_token: token } : {};
    request(s, 'hello', fields).then(safe(function (r) {
      if (!r) return finish(s, 'error');
      saveToken(r.visitor_token);
      s.ice = Array.isArray(r.ice_servers) ? r.ice_servers : [];
      var page = { url: cut(location.href, 2048), title: cut(d.title, 300), referrer: cut(d.referrer, 2048) };
      return request(s, 'call.start', { queue: s.queue, page: page }).then(safe(function (res) { onStarted(s, res); }));
    }));
  }

  function onStarted(s, r) {
    if (!r) return finish(s, 'error');
    if (!s.callId) s.callId = r.call_id;
    if (r.state === 'ended') return finish(s, r.reason || 'failed');
    // Events may have overtaken the result; only move on from "connecting".
    if (!s.done && info.state === 'connecting' && (r.state === 'queued' || r.state === 'ringing')) setState(r.state);
  }

  // ---------- WebRTC ----------

  function onConnected(s, m) {
    if (s.t0) return; // a repeated event must not start a second peer connection
    s.t0 = Date.now();
    s.timer = setInterval(safe(tick), 1000);
    setState('connected');
    tick();
    if (m.offerer === false) return warn('server did not make the caller the offerer');
    makeOffer(s).catch(safe(function (e) { warn('WebRTC setup failed', e); end(s, 'failed'); }));
  }

  async function makeOffer(s) {
    var pc = s.pc = new RTCPeerConnection({ iceServers: s.ice });
    s.stream.getTracks().forEach(function (t) { pc.addTrack(t, s.stream); });
    pc.ontrack = safe(function (e) { playRemote(e); });
    pc.onicecandidate = safe(function (e) { sendCandidate(s, e.candidate); });
    pc.onconnectionstatechange = safe(function () {
      // "failed" does not recover without an ICE restart, which v1 has no message for: end the call cleanly.
      if (pc.connectionState === 'failed') end(s, 'failed');
    });
    await pc.setLocalDescription(await pc.createOffer());
    if (s.done) return;
    request(s, 'rtc.offer', { call_id: s.callId, sdp: pc.localDescription.sdp });
    // Candidates gathered before the offer went out are sent after it, so the agent always gets the offer first.
    s.offerSent = true;
    s.outCandidates.splice(0).forEach(function (c) { sendCandidate(s, c); });
  }

  function sendCandidate(s, c) {
    if (s.done) return;
    if (!s.offerSent) return s.outCandidates.push(c);
    var j = null;
    if (c) {
      var o = c.toJSON ? c.toJSON() : c;
      // Copy the known fields only: the server rejects unknown ones, and browsers may add fields to toJSON().
      j = { candidate: o.candidate, sdpMid: o.sdpMid, sdpMLineIndex: o.sdpMLineIndex };
      if (o.usernameFragment) j.usernameFragment = o.usernameFragment;
    }
    request(s, 'rtc.candidate', { call_id: s.callId, candidate: j });
  }

  function onAnswer(s, m) {
    if (!s.pc || typeof m.sdp !== 'string') return;
    s.pc.setRemoteDescription({ type: 'answer', sdp: m.sdp }).then(safe(function () {
      s.remoteSet = true;
      s.inCandidates.splice(0).forEach(function (c) { addRemoteCandidate(s, c); });
    }), safe(function (e) { warn('bad answer', e); end(s, 'failed'); }));
  }

  function addRemoteCandidate(s, c) {
    if (!c || s.done) return; // null only marks the end of candidates; nothing to do for it
    // addIceCandidate fails before the remote description exists, so early candidates wait for the answer.
    if (!s.remoteSet) return s.inCandidates.push(c);
    s.pc.addIceCandidate(c).catch(function (e) { warn('bad ICE candidate', e); });
  }

  function playRemote(e) {
    ui.audio.srcObject = (e.streams && e.streams[0]) || new MediaStream([e.track]);
    // Autoplay is allowed after the click that started the call; a call started by talk('call') may be refused.
    var p = ui.audio.play();
    if (p) p.catch(function (err) { warn('remote audio blocked', err); });
  }

  // ---------- call lifecycle ----------

  function supported() {
    return !!(w.RTCPeerConnection && w.WebSocket && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  }

  function micError(e) {
    var n = e && e.name;
    if (n === 'NotAllowedError' || n === 'SecurityError') return 'microphone-denied';
    return n === 'NotFoundError' || n === 'OverconstrainedError' ? 'no-microphone' : 'failed';
  }

  function start(opts) {
    if (call) return warn('a call is already in progress');
    var queue = String((opts && opts.queue) || cfg.queue).slice(0, 64);
    var s = call = { queue: queue, seq: 0, pending: {}, ice: [], outCandidates: [], inCandidates: [] };
    muted = false;
    if (!supported()) return finish(s, 'unsupported');
    setState('connecting');
    // The microphone comes first so a denial is reported before any network work happens.
    navigator.mediaDevices.getUserMedia({ audio: true }).then(safe(function (stream) {
      if (s.done) return stopStream(stream); // cancelled while the permission prompt was open
      s.stream = stream;
      applyMute(s);
      connect(s);
    }), safe(function (e) { warn('microphone unavailable', e); finish(s, micError(e)); }));
  }

  // Ended by this side: tell the server (so the agent hears about it at once), then clean up.
  function end(s, reason) {
    if (s.done) return;
    var id = s.callId;
    finish(s, reason, !!id);
    if (id) request(s, 'call.hangup', { call_id: id }).then(function () { closeSocket(s); });
  }

  function hangup() {
    if (call) end(call, info.state === 'connected' ? 'completed' : 'caller-cancelled');
  }

  // The single place a call ends, whoever ended it. `linger` keeps the socket open briefly for a hangup's result.
  function finish(s, reason, linger) {
    if (s.done) return;
    s.done = true;
    clearInterval(s.timer);
    if (s.pc) { try { s.pc.close(); } catch (e) { /* already closed */ } }
    s.pc = null;
    stopStream(s.stream);
    Object.keys(s.pending).forEach(function (id) { s.pending[id].resolve(null); });
    s.pending = {};
    if (linger) setTimeout(safe(function () { closeSocket(s); }), 3000);
    else closeSocket(s);
    if (ui) ui.audio.srcObject = null;
    if (call === s) {
      call = null;
      setState('ended', null, reason);
    }
  }

  function closeSocket(s) {
    var ws = s.ws;
    s.ws = null;
    if (!ws) return;
    ws.onclose = ws.onmessage = null;
    try { ws.close(1000); } catch (e) { /* already closing */ }
  }

  function applyMute(s) {
    if (s && s.stream) s.stream.getAudioTracks().forEach(function (t) { t.enabled = !muted; });
  }

  function mute(on) {
    muted = on === undefined ? !muted : !!on;
    applyMute(call);
    render();
  }

  function stats() {
    var pc = call && call.pc;
    if (!pc) return Promise.resolve(null);
    return pc.getStats().then(function (report) {
      var out = { inboundPackets: 0, outboundPackets: 0 };
      report.forEach(function (r) {
        if ((r.kind || r.mediaType) !== 'audio') return;
        if (r.type === 'inbound-rtp') out.inboundPackets += r.packetsReceived || 0;
        if (r.type === 'outbound-rtp') out.outboundPackets += r.packetsSent || 0;
      });
      return out;
    }).catch(function (e) { warn('stats failed', e); return null; });
  }

  function on(event, fn) {
    if (event !== 'state' || typeof fn !== 'function') return warn('talk("on") needs "state" and a function');
    // Returns nothing on purpose: Playwright's page.evaluate() calls a returned function, which would unsubscribe.
    listeners.push(fn);
  }

  // ---------- public API ----------

  var COMMANDS = { call: start, hangup: hangup, on: on, mute: mute, stats: stats };

  function talk(cmd) {
    try {
      if (!Object.prototype.hasOwnProperty.call(COMMANDS, cmd)) return warn('unknown command', cmd);
      return COMMANDS[cmd].apply(null, Array.prototype.slice.call(arguments, 1));
    } catch (e) {
      warn(String(cmd) + ' failed', e);
    }
  }
  talk.v = 1;

  function boot() {
    try {
      mount();
    } catch (e) {
      return warn('cannot show the widget', e);
    }
    var queued = (prev && prev.q) || [];
    w.talk = talk;
    for (var i = 0; i < queued.length; i++) talk.apply(null, queued[i]);
  }

  // Until boot() replaces it, the loader's stub keeps queueing commands, so nothing is lost while the DOM loads.
  if (d.body) boot();
  else d.addEventListener('DOMContentLoaded', boot);
})(window, document);
