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
      cancel: 'Cancel', mute: 'Mute', unmute: 'Unmute', hangup: 'Hang up', close: 'Close',
      feedback: 'Your feedback', rate: 'How would you rate your call?', scale: '1 = very poor, 5 = excellent',
      comment: 'Comment', commentQ: 'Anything else you would like to tell us? (optional)', send: 'Send',
      thanks: 'Thank you for your feedback!', already: 'This call has already been rated. Thank you!',
      pick: 'Please choose a rating from 1 to 5.', notSent: 'Your feedback could not be sent. Please try again.',
      connectedTo: 'Connected to {name}', linkDead: 'This call link no longer works.',
      leaveVm: 'Leave a voicemail', recording: 'Recording your message (up to {n} seconds)…',
      vmSend: 'Send message', vmSaved: 'Your message was sent. Thank you!',
      vmFailed: 'Your message could not be recorded. Please try again later.'
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
      cancel: 'Abbrechen', mute: 'Stummschalten', unmute: 'Stummschaltung aufheben', hangup: 'Auflegen', close: 'Schließen',
      feedback: 'Ihre Meinung', rate: 'Wie bewerten Sie das Gespräch?', scale: '1 = sehr schlecht, 5 = ausgezeichnet',
      comment: 'Kommentar', commentQ: 'Möchten Sie uns noch etwas mitteilen? (optional)', send: 'Senden',
      thanks: 'Vielen Dank für Ihre Rückmeldung!', already: 'Dieses Gespräch wurde bereits bewertet. Vielen Dank!',
      pick: 'Bitte wählen Sie eine Bewertung von 1 bis 5.',
      notSent: 'Ihre Rückmeldung konnte nicht gesendet werden. Bitte versuchen Sie es erneut.',
      connectedTo: 'Verbunden mit {name}', linkDead: 'Dieser Anruflink funktioniert nicht mehr.',
      leaveVm: 'Nachricht hinterlassen', recording: 'Ihre Nachricht wird aufgenommen (bis zu {n} Sekunden)…',
      vmSend: 'Nachricht senden', vmSaved: 'Ihre Nachricht wurde gesendet. Vielen Dank!',
      vmFailed: 'Ihre Nachricht konnte nicht aufgenommen werden. Bitte versuchen Sie es später erneut.'
    },
    fr: {
      call: 'Appelez-nous', title: 'Appel vocal', connecting: 'Connexion…', waiting: 'En attente dans la file…',
      queued: 'Vous êtes numéro {n} dans la file d’attente', ringing: 'Ça sonne…', connected: 'Connecté',
      ended: 'Appel terminé', noAgent: 'Désolé, personne n’est disponible pour le moment. Veuillez réessayer plus tard.',
      micDenied: 'L’accès au microphone a été refusé. Autorisez le microphone pour nous appeler.',
      noMic: 'Aucun microphone n’a été trouvé.', unsupported: 'Votre navigateur ne prend pas en charge les appels vocaux.',
      lost: 'La connexion a été perdue. Veuillez réessayer.', failed: 'L’appel n’a pas pu être établi. Veuillez réessayer.',
      cancel: 'Annuler', mute: 'Couper le micro', unmute: 'Réactiver le micro', hangup: 'Raccrocher', close: 'Fermer',
      feedback: 'Votre avis', rate: 'Comment évaluez-vous votre appel\u00a0?', scale: '1 = très mauvais, 5 = excellent',
      comment: 'Commentaire', commentQ: 'Souhaitez-vous nous dire autre chose\u00a0? (facultatif)', send: 'Envoyer',
      thanks: 'Merci pour votre avis\u00a0!', already: 'Cet appel a déjà été évalué. Merci\u00a0!',
      pick: 'Veuillez choisir une note de 1 à 5.', notSent: 'Votre avis n’a pas pu être envoyé. Veuillez réessayer.',
      connectedTo: 'Connecté à {name}', linkDead: 'Ce lien d’appel ne fonctionne plus.',
      leaveVm: 'Laisser un message', recording: 'Enregistrement de votre message (jusqu’à {n} secondes)…',
      vmSend: 'Envoyer le message', vmSaved: 'Votre message a été envoyé. Merci\u00a0!',
      vmFailed: 'Votre message n’a pas pu être enregistré. Veuillez réessayer plus tard.'
    }
  };
  var T = I18N[cfg.lang] || I18N.en;

  // End reason (server reasons from the protocol, plus the widget's own) → message key; anything else is "Call ended".
  var REASON_TEXT = {
    'no-agent': 'noAgent', 'agent-declined': 'noAgent', 'microphone-denied': 'micDenied', 'no-microphone': 'noMic',
    unsupported: 'unsupported', 'connection-lost': 'lost', 'agent-disconnected': 'lost', 'caller-disconnected': 'lost',
    'connection-failed': 'failed', failed: 'failed', error: 'failed', 'endpoint-unavailable': 'linkDead',
    'voicemail-saved': 'vmSaved', 'voicemail-failed': 'vmFailed'
  };
  var ACTIVE = { connecting: 1, queued: 1, ringing: 1, connected: 1, recording: 1 };
  var VID = /^v_[\w-]{16,40}$/, SID = /^s_[\w-]{16,40}$/;

  var ui = null;        // elements, built once by mount()
  var call = null;      // the call in progress (a session object), null when there is none
  var info = { state: 'idle', position: null, reason: null, message: '' };
  var listeners = [];
  var muted = false;
  var dismissed = false;
  var pendingSurvey = null; // [callId, questions] waiting for the UI to be mounted
  var vmOffer = null;       // an unanswered call whose caller may leave a voicemail: its session, socket still open

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

  function mmss(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    return String(Math.floor(s / 60)).padStart(2, '0') + ':' + String(s % 60).padStart(2, '0');
  }

  function stopStream(stream) {
    if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
  }

  // ---------- first-party storage ----------

  // localStorage throws in some privacy modes and sandboxed iframes, or may be full: a value that cannot be stored
  // lives in memory for this page only.
  var mem = Object.create(null);

  function sget(k) {
    var v = null;
    try { v = w.localStorage.getItem(k); } catch (e) { /* blocked */ }
    return v === null && k in mem ? mem[k] : v;
  }

  function sset(k, v) {
    try { w.localStorage.setItem(k, v); delete mem[k]; } catch (e) { mem[k] = v; }
  }

  function clearStorage() {
    mem = Object.create(null);
    try {
      var ls = w.localStorage;
      for (var i = ls.length - 1; i >= 0; i--) if (/^talk_/.test(ls.key(i))) ls.removeItem(ls.key(i));
    } catch (e) { /* blocked: nothing was stored */ }
  }

  function rand() {
    // 128 random bits, base64url: 22 characters.
    var b = crypto.getRandomValues(new Uint8Array(16));
    return btoa(String.fromCharCode.apply(null, b)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  // ---------- consent and the visitor's ids ----------

  // talk_consent: '1' given, '0' refused (kept only without data-consent="required", so an opt-out sticks).
  function allowed() {
    var c = sget('talk_consent');
    return cfg.consent ? c === '1' : c !== '0';
  }

  // {v: visitor_id, s: session_id}, creating what is missing, or null without consent. Every call is activity: the
  // session ends only after cfg.sessionMinutes without one.
  function ids() {
    if (!allowed()) return null;
    var now = Date.now(), v = sget('talk_vid'), s = sget('talk_sid'), t = +sget('talk_sts');
    if (!VID.test(v)) sset('talk_vid', v = 'v_' + rand());
    if (!SID.test(s) || !(now - t < cfg.sessionMinutes * 60000)) sset('talk_sid', s = 's_' + rand());
    sset('talk_sts', String(now));
    return { v: v, s: s };
  }

  function consent(on) {
    if (typeof on !== 'boolean') return warn('talk("consent") needs true or false');
    if (on) {
      sset('talk_consent', '1');
      ids();
      return pageview();
    }
    clearStorage();
    outbox = [];
    clearTimeout(navTimer);
    viewed = null;
    if (!cfg.consent) sset('talk_consent', '0');
  }

  // ---------- HTTP API (docs/api.md) ----------

  function post(path, body) {
    // text/plain keeps it a "simple" CORS request (no preflight); the body is JSON. keepalive outlives the page.
    return fetch(cfg.api + path, {
      method: 'POST', keepalive: true, credentials: 'omit', body: body, headers: { 'Content-Type': 'text/plain' }
    });
  }

  // After a 503: how long to wait (ms). Cross-origin, Retry-After is readable only if the server exposes it.
  function retryAfter(r) {
    return Math.min(Math.max(+r.headers.get('Retry-After') || 5, 1), 60) * 1000;
  }

  // ---------- page views ----------

  var viewed = null;  // URL (without fragment) of the last page view recorded; null before the first
  var outbox = [];    // events not sent yet: {v, s, e, n: attempts}
  var pausedUntil = 0;
  var navTimer = 0;

  function here() { return location.href.split('#')[0]; }

  // Record a page view of the current URL unless it was the last one recorded (a fragment change is no new page).
  // `again`: a page restored from the back/forward cache, same URL but viewed anew.
  function pageview(again) {
    var url = here();
    if (!cfg.track || !/^https?:/.test(url) || (url === viewed && !again)) return;
    var id = ids();
    if (!id) return;
    // After the first view (a single-page-app navigation) the referrer is the previous page.
    var ref = viewed === null || again ? d.referrer : viewed;
    viewed = url;
    outbox.push({ v: id.v, s: id.s, n: 0, e: {
      id: 'e_' + rand(), type: 'pageview', ts: Date.now(), url: cut(url, 2048), title: cut(d.title, 300),
      referrer: cut(ref, 2048)
    } });
    if (outbox.length > 50) outbox.shift();
    flush();
  }

  // Send what is queued, one batch per visitor/session (≤ 50 events, ≤ 32 KiB). `leaving`: the page is going away,
  // send even while paused by a 503 (the last chance).
  function flush(leaving) {
    if (!leaving && Date.now() < pausedUntil) return;
    while (outbox.length) {
      var o = outbox[0], batch = [], body = '';
      for (var i = 0; i < outbox.length && i < 50 && outbox[i].v === o.v && outbox[i].s === o.s; i++) {
        var next = JSON.stringify({ site: cfg.site, visitor_id: o.v, session_id: o.s, sent_at: Date.now(),
          events: batch.concat(outbox[i]).map(function (x) { return x.e; }) });
        if (i && new Blob([next]).size > 32000) break;
        batch.push(outbox[i]);
        body = next;
      }
      outbox.splice(0, batch.length);
      sendEvents(body, batch, leaving);
    }
  }

  // fetch with keepalive outlives the page too, and unlike a beacon it sees a 503, so a refused batch is retried.
  // The beacon is for a page being left (where browsers cap keepalive bodies) or a browser without keepalive fetch.
  function sendEvents(body, batch, leaving) {
    if (leaving || !w.fetch) {
      try {
        if (navigator.sendBeacon(cfg.api + '/api/v1/events', new Blob([body], { type: 'text/plain' }))) return;
      } catch (e) { /* no sendBeacon, or it threw: fetch below */ }
    }
    post('/api/v1/events', body).then(safe(function (r) {
      if (r.status !== 503) return r.ok || warn('page view not recorded: HTTP ' + r.status);
      // Overloaded: nothing was stored. Try again after Retry-After (a fresh sent_at), at most 3 times.
      if (!allowed()) return; // consent withdrawn meanwhile
      var wait = retryAfter(r);
      pausedUntil = Date.now() + wait;
      outbox = batch.filter(function (x) { return ++x.n < 3; }).concat(outbox);
      setTimeout(safe(flush), wait);
    }), function (e) { warn('page view not sent', e); });
  }

  var wrapped = false;

  function watchHistory() {
    if (wrapped || !cfg.track) return;
    wrapped = true;
    ['pushState', 'replaceState'].forEach(function (name) {
      var orig = history[name];
      if (typeof orig !== 'function') return;
      try {
        history[name] = function () {
          // The page's own errors (e.g. a cross-origin URL) reach the page as before; ours never do.
          var r = orig.apply(this, arguments);
          try { navigated(); } catch (e) { warn('internal error', e); }
          return r;
        };
      } catch (e) { warn('cannot follow ' + name, e); } // e.g. a page that froze history
    });
    w.addEventListener('popstate', safe(navigated));
    w.addEventListener('pageshow', safe(function (e) { if (e.persisted) pageview(true); }));
  }

  function navigated() {
    // Coalesce bursts (pushState then replaceState) and let the app set the new title first.
    clearTimeout(navTimer);
    navTimer = setTimeout(safe(function () { navTimer = 0; pageview(); }), 100);
  }

  function leaving() {
    if (navTimer) { clearTimeout(navTimer); navTimer = 0; pageview(); }
    flush(true);
  }

  // ---------- conversions ----------

  function conversion(o) {
    o = o || {};
    var value = o.value, order = o.order_id, cur = typeof o.currency === 'string' ? o.currency.trim().toUpperCase() : '';
    if (typeof order === 'number' && isFinite(order)) order = String(order);
    if (typeof value !== 'number' || !(value >= 0 && value <= 1e9)) return warn('conversion: value must be a number from 0 to 1000000000', value);
    if (!/^[A-Z]{3}$/.test(cur)) return warn('conversion: currency must be a three-letter code like "EUR"', o.currency);
    if (typeof order !== 'string' || !order || order.length > 100) return warn('conversion: order_id must be a string of 1-100 characters', order);
    var id = ids();
    if (!id) return warn('conversion ignored: no consent to tracking');
    var body = JSON.stringify({ site: cfg.site, visitor_id: id.v, session_id: id.s, order_id: order, value: value, currency: cur });
    var done = function (r) { if (!r.ok) warn('conversion not recorded: HTTP ' + r.status); };
    var failed = function (e) { warn('conversion not sent', e); };
    post('/api/v1/conversions', body).then(function (r) {
      // Overloaded: one more try after Retry-After (the order id makes a repeat harmless).
      if (r.status !== 503) return done(r);
      setTimeout(function () { post('/api/v1/conversions', body).then(done, failed); }, retryAfter(r));
    }, failed);
  }

  // ---------- state ----------

  function messageFor(state, position, reason, extra) {
    if (state === 'queued') return position > 0 ? T.queued.replace('{n}', position) : T.waiting;
    if (state === 'ended') return T[REASON_TEXT[reason] || 'ended'];
    if (state === 'connected' && extra) return T.connectedTo.replace('{name}', extra);
    if (state === 'recording') return T.recording.replace('{n}', extra || 120);
    return T[state] || '';
  }

  // `extra`: the peer's name (connected), the longest message (recording), or the server's own words (ended).
  function setState(state, position, reason, extra) {
    position = state === 'queued' && position > 0 ? Number(position) : null;
    reason = state === 'ended' ? reason || null : null;
    var message = state === 'ended' && extra ? extra : messageFor(state, position, reason, extra);
    info = { state: state, position: position, reason: reason, message: message };
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
    '.w{position:relative}',
    '.w,.ov{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f1f1f}',
    'button{font:inherit;cursor:pointer;border-radius:999px}',
    ':focus-visible{outline:3px solid #1a73e8;outline-offset:2px}',
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
    '.actions .end{background:#b3261e;border-color:#b3261e;color:#fff}',
    // The survey: a modal dialog over the page.
    '.ov{position:fixed;inset:0;display:flex;align-items:center;justify-content:center;padding:16px;',
    'background:rgba(0,0,0,.45)}',
    '.dlg{position:relative;box-sizing:border-box;width:380px;max-width:100%;max-height:100%;overflow:auto;',
    'padding:20px;background:#fff;border-radius:14px;box-shadow:0 8px 30px rgba(0,0,0,.3)}',
    '.dlg:focus{outline:0}',
    'h2{margin:0 36px 14px 0;font-size:18px}',
    '.x{position:absolute;top:12px;right:12px;width:32px;height:32px;border:0;background:none;font-size:22px;line-height:1}',
    'fieldset{border:0;margin:0 0 14px;padding:0;min-width:0}',
    'legend,.cl{padding:0;margin:0 0 8px;font-weight:600}',
    '.rs{display:flex;gap:6px}',
    '.r{flex:1;display:flex;flex-direction:column;align-items:center;gap:2px;padding:6px 0;border:1px solid #c4c7c5;',
    'border-radius:8px;cursor:pointer}',
    '.r input{margin:0;accent-color:var(--talk-bg)}',
    '.r:has(:checked){border-color:var(--talk-bg);box-shadow:inset 0 0 0 1px var(--talk-bg)}',
    '.hint{margin:6px 0;color:#5f6368;font-size:13px}',
    '.cl{display:block}',
    'textarea{box-sizing:border-box;display:block;width:100%;font:inherit;padding:8px;border:1px solid #c4c7c5;',
    'border-radius:8px;resize:vertical}',
    '.send{margin-top:14px;border:0;padding:10px 22px;font-weight:600;background:var(--talk-bg);color:var(--talk-fg)}',
    '.msg{margin:12px 0 0}',
    '.msg:empty{margin:0}'
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
      close: actionButton('close', T.close, function () { dismissed = true; dropVoicemail(); render(); }),
      vm: actionButton('vm', T.leaveVm, function () { recordVoicemail(); }),
      call: h('button', { type: 'button', class: 'call' }, [icon(), h('span', {}, [cfg.label || T.call])]),
      audio: h('audio', { autoplay: '' })
    };
    u.mute.setAttribute('aria-pressed', 'false');
    u.panel = h('section', { class: 'panel', 'aria-label': T.title, 'data-state': 'idle', hidden: '' }, [
      u.status, u.timer, h('div', { class: 'actions' }, [u.cancel, u.mute, u.hangup, u.vm, u.close])
    ]);
    u.call.addEventListener('click', safe(function () { start(); }));
    u.wrap = h('div', { class: 'w ' + (cfg.position === 'bottom-left' ? 'left' : 'right') }, [u.panel, u.call, u.audio]);
    root.append(u.wrap);
    d.body.append(host);
    ui = u;
    render(); // commands replayed before the page had a body may already have started a call
    if (pendingSurvey) showSurvey.apply(null, pendingSurvey);
  }

  function render() {
    if (!ui) return;
    var s = info.state, focused = ui.root.activeElement;
    ui.panel.setAttribute('data-state', s);
    ui.panel.hidden = s === 'idle' || dismissed;
    ui.status.textContent = info.message;
    ui.timer.hidden = s !== 'connected' && s !== 'recording';
    ui.cancel.hidden = !(s === 'connecting' || s === 'queued' || s === 'ringing');
    ui.mute.hidden = s !== 'connected';
    ui.hangup.hidden = s !== 'connected' && s !== 'recording';
    ui.hangup.textContent = s === 'recording' ? T.vmSend : T.hangup;
    ui.vm.hidden = !(s === 'ended' && vmOffer);
    ui.close.hidden = s !== 'ended';
    ui.mute.setAttribute('aria-pressed', String(muted));
    ui.mute.textContent = muted ? T.unmute : T.mute;
    ui.call.disabled = !!ACTIVE[s];
    ui.call.hidden = cfg.button === false;
    // Keep keyboard focus inside the widget when the focused button just disappeared (e.g. Cancel → Hang up).
    if (focused && (focused.hidden || focused.disabled || ui.panel.hidden)) {
      var next = [ui.cancel, ui.hangup, ui.vm, ui.close].filter(function (b) { return !b.hidden && !ui.panel.hidden; })[0];
      (next || ui.call).focus();
    }
  }

  function tick() {
    if (call && ui) ui.timer.textContent = mmss(Date.now() - call.t0);
  }

  // ---------- survey ----------

  // The landing page after a call carries ?talk_call=CALL_ID. Read it, then take it out of the address bar (so a
  // reload does not ask again) without recording another page view.
  function takeCallParam() {
    var m = /[?&]talk_call=([\w-]{1,100})(?:&|$)/.exec(location.search);
    if (!m) return null;
    var q = location.search.slice(1).split('&').filter(function (p) { return p.split('=')[0] !== 'talk_call'; });
    var clean = location.pathname + (q.length ? '?' + q.join('&') : '') + location.hash;
    try {
      var nav = navTimer;
      history.replaceState(history.state, '', clean);
      // Our own history wrapper saw it: the URL changed, but it is the page already recorded.
      if (!nav) { clearTimeout(navTimer); navTimer = 0; }
      if (viewed !== null) viewed = here();
    } catch (e) { warn('cannot clean the address bar', e); }
    return m[1];
  }

  function loadSurvey(callId) {
    fetch(cfg.api + '/api/v1/surveys/' + encodeURIComponent(callId), { credentials: 'omit' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(safe(function (r) {
      if (r && r.answered === false) showSurvey(callId, r.questions || {});
    }), function (e) { warn('no survey', e); });
  }

  function showSurvey(callId, q) {
    if (!ui) return (pendingSurvey = [callId, q]);
    pendingSurvey = null;
    if (ui.survey) return;
    var back = d.activeElement === ui.host ? ui.root.activeElement : d.activeElement;
    var busy = false;
    var radios = [1, 2, 3, 4, 5].map(function (n) {
      return h('label', { class: 'r' }, [h('input', { type: 'radio', name: 'rating', value: n }), String(n)]);
    });
    var text = h('textarea', { id: 'cm', rows: 3, maxlength: 1000, 'aria-describedby': 'cq' });
    var send = h('button', { type: 'submit', class: 'send' }, [T.send]);
    var form = h('form', { novalidate: '' }, [
      h('fieldset', { 'aria-describedby': 'sc' }, [
        h('legend', {}, [typeof q.rating === 'string' ? q.rating : T.rate]),
        h('div', { class: 'rs' }, radios),
        h('p', { id: 'sc', class: 'hint' }, [T.scale])
      ]),
      h('label', { for: 'cm', class: 'cl' }, [T.comment]),
      h('p', { id: 'cq', class: 'hint' }, [typeof q.comment === 'string' ? q.comment : T.commentQ]),
      text, send
    ]);
    var x = h('button', { type: 'button', class: 'x', 'aria-label': T.close }, ['×']);
    var msg = h('p', { class: 'msg', role: 'status', 'aria-live': 'polite' });
    var dlg = h('div', { class: 'dlg', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'sv', tabindex: -1, lang: cfg.lang },
      [h('h2', { id: 'sv' }, [T.feedback]), x, form, msg]);
    var ov = ui.survey = h('div', { class: 'ov' }, [dlg]);

    function close() {
      ov.remove();
      ui.survey = null;
      ui.wrap.inert = false;
      if (back && back.isConnected && back.focus) back.focus();
    }

    function finished(text) {
      form.hidden = true;
      msg.textContent = text;
      x.focus();
    }

    x.addEventListener('click', safe(close));
    // A click on the backdrop must not take focus out of the dialog (Escape would no longer reach it).
    ov.addEventListener('mousedown', function (e) { if (e.target === ov) e.preventDefault(); });
    dlg.addEventListener('keydown', safe(function (e) {
      if (e.key === 'Escape') { e.preventDefault(); return close(); }
      if (e.key !== 'Tab') return;
      // Keep Tab inside the dialog.
      var f = [].filter.call(dlg.querySelectorAll('button,input,textarea'), function (el) { return !el.closest('[hidden]'); });
      var cur = ui.root.activeElement;
      if (e.shiftKey ? cur === f[0] || cur === dlg : cur === f[f.length - 1]) {
        e.preventDefault();
        f[e.shiftKey ? f.length - 1 : 0].focus();
      }
    }));
    form.addEventListener('submit', safe(function (e) {
      e.preventDefault();
      if (busy) return;
      var picked = form.querySelector('input:checked');
      if (!picked) {
        msg.textContent = T.pick;
        return radios[0].firstChild.focus();
      }
      var answer = { rating: +picked.value }, comment = text.value.trim();
      if (comment) answer.comment = cut(comment, 1000);
      busy = true;
      msg.textContent = '';
      post('/api/v1/surveys/' + encodeURIComponent(callId), JSON.stringify(answer)).then(safe(function (r) {
        busy = false;
        if (r.ok || r.status === 409) return finished(r.ok ? T.thanks : T.already);
        warn('survey answer not recorded: HTTP ' + r.status);
        msg.textContent = T.notSent;
      }), safe(function (err) {
        busy = false;
        warn('survey answer not sent', err);
        msg.textContent = T.notSent;
      }));
    }));

    ui.wrap.inert = true; // the call button and panel sit behind the modal
    ui.root.append(ov);
    radios[0].firstChild.focus();
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
    s.error = m.error || null;
    p.resolve(null);
  }

  var EVENTS = {
    'call.queued': function (s, m) { setState('queued', m.position); },
    'call.ringing': function () { setState('ringing'); },
    'call.connected': onConnected,
    'rtc.answer': onAnswer,
    'rtc.candidate': function (s, m) { addRemoteCandidate(s, m.candidate); },
    'voicemail.saved': function (s, m) { voicemailDone(s, m); }
  };

  function onMessage(s, data) {
    var m;
    try { m = JSON.parse(data); } catch (e) { return warn('unreadable message', e); }
    if (!m || typeof m !== 'object') return;
    if (m.type === 'result') return onResult(s, m);
    // A call's WebSocket carries only that call, so the first call_id seen identifies it; others are stale.
    if (s.callId && m.call_id && m.call_id !== s.callId) return;
    if (m.call_id && !s.callId && !s.done) s.callId = m.call_id;
    // call.ended still counts after we hung up ourselves: it says where the caller goes next.
    if (m.type === 'call.ended' && s.callId) return ended(s, m);
    if (!s.done && EVENTS[m.type]) EVENTS[m.type](s, m);
  }

  function ended(s, m) {
    if (s.ended) return;
    s.ended = true;
    if (s.done) closeSocket(s); // we hung up and lingered for this
    else if (m.voicemail && m.voicemail.max_seconds > 0) offerVoicemail(s, m);
    else finish(s, m.reason || 'completed');
    ids(); // a call is activity: the landing page belongs to the same session
    var to = typeof m.landing_url === 'string' && httpUrl(m.landing_url);
    if (to) return location.assign(to);
    if (m.survey === true) loadSurvey(s.callId);
  }

  function httpUrl(u) {
    try { u = new URL(u, location.href); } catch (e) { return null; }
    return /^https?:$/.test(u.protocol) ? u.href : null;
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
    // The call joins the visitor's journey only with consent; the server's visitor_id for this connection is not kept.
    var id = ids();
    request(s, 'hello', id ? { visitor_id: id.v, session_id: id.s } : {}).then(safe(function (r) {
      if (!r) return finish(s, 'error');
      s.ice = Array.isArray(r.ice_servers) ? r.ice_servers : [];
      var page = { url: cut(location.href, 2048), title: cut(d.title, 300), referrer: cut(d.referrer, 2048) };
      var target = s.seller ? { seller: s.seller } : { queue: s.queue };
      if (s.seller && s.listing) target.listing = s.listing;
      return request(s, 'call.start', Object.assign(target, { page: page })).then(safe(function (res) {
        onStarted(s, res);
      }));
    }));
  }

  function onStarted(s, r) {
    if (!r && s.error && s.error.code === 'endpoint_unavailable') {
      // A revoked or expired seller link: the server's words are the clearest (they are English).
      return finish(s, 'endpoint-unavailable', false, cfg.lang === 'en' ? cut(s.error.message, 200) : '');
    }
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
    setState('connected', null, null, m.peer && typeof m.peer.name === 'string' ? cut(m.peer.name, 80) : '');
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
    request(s, 'rtc.offer', { call_id: s.callId, sdp: pc.localDescription.sdp }).then(safe(function (r) {
      if (!r && !s.done) end(s, 'failed'); // e.g. the server could not use the offer (media_error)
    }));
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
    if (!ui) return;
    ui.audio.srcObject = (e.streams && e.streams[0]) || new MediaStream([e.track]);
    // Autoplay is allowed after the click that started the call; a call started by talk('call') may be refused.
    var p = ui.audio.play();
    if (p) p.catch(function (err) { warn('remote audio blocked', err); });
  }

  // ---------- voicemail (docs/protocol.md, "Voicemail") ----------

  // Nobody took the call, but the caller may leave a message: the call ends here, its socket stays open for it.
  function offerVoicemail(s, m) {
    var ws = s.ws;
    s.ws = null; // finish() must not close it
    finish(s, m.reason || 'no-agent');
    var v = vmOffer = { ws: ws, callId: s.callId, ice: s.ice, max: Math.min(+m.voicemail.max_seconds || 120, 600) };
    ws.onmessage = ws.onclose = null;
    // The server keeps the offer for two minutes; the button goes with it.
    v.expiry = setTimeout(safe(function () { if (vmOffer === v) { dropVoicemail(); render(); } }), 110000);
    render();
  }

  function dropVoicemail() {
    var v = vmOffer;
    vmOffer = null;
    if (!v) return;
    clearTimeout(v.expiry);
    closeSocket(v);
  }

  function recordVoicemail() {
    var v = vmOffer;
    if (!v || call) return;
    vmOffer = null;
    clearTimeout(v.expiry);
    var s = call = { voicemail: true, ws: v.ws, callId: v.callId, ice: v.ice, opened: true, seq: 1000, pending: {},
      outCandidates: [], inCandidates: [] };
    s.ws.onmessage = safe(function (e) { onMessage(s, e.data); });
    s.ws.onclose = safe(function () { finish(s, 'voicemail-failed'); });
    setState('recording', null, null, v.max);
    navigator.mediaDevices.getUserMedia({ audio: true }).then(safe(function (stream) {
      if (s.done) return stopStream(stream);
      s.stream = stream;
      return request(s, 'voicemail.start', { call_id: s.callId }).then(safe(function (r) {
        if (!r) return finish(s, 'voicemail-failed');
        s.t0 = Date.now();
        s.timer = setInterval(safe(tick), 1000);
        tick();
        return makeOffer(s);
      }));
    }), safe(function (e) { warn('microphone unavailable', e); finish(s, micError(e)); }))
      .catch(safe(function (e) { warn('voicemail failed', e); finish(s, 'voicemail-failed'); }));
  }

  function stopVoicemail(s) {
    if (s.stopping) return;
    s.stopping = true;
    stopStream(s.stream); // nothing more is recorded from here
    request(s, 'voicemail.stop', { call_id: s.callId }).then(safe(function (r) { voicemailDone(s, r); }));
  }

  // The server's answer to voicemail.stop, or its voicemail.saved when the length limit ended the message.
  function voicemailDone(s, r) {
    finish(s, r && r.saved ? 'voicemail-saved' : 'voicemail-failed');
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
    opts = opts || {};
    dropVoicemail();
    var queue = String(opts.queue || cfg.queue).slice(0, 64);
    var s = call = { queue: queue, seq: 0, pending: {}, ice: [], outCandidates: [], inCandidates: [] };
    // A masked call to a seller goes through the seller's endpoint token (and may name the listing).
    if (opts.seller) {
      s.seller = String(opts.seller).slice(0, 64);
      if (opts.listing) s.listing = String(opts.listing).slice(0, 120);
    }
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
    if (s.voicemail) return finish(s, 'voicemail-failed');
    var id = s.callId;
    finish(s, reason, !!id);
    // Keep listening for call.ended (landing page, survey) unless it already came or the hangup failed.
    if (id) request(s, 'call.hangup', { call_id: id }).then(function (r) { if (!r || s.ended) closeSocket(s); });
  }

  function hangup() {
    if (call && call.voicemail) return stopVoicemail(call);
    if (call) end(call, info.state === 'connected' ? 'completed' : 'caller-cancelled');
  }

  // The single place a call ends, whoever ended it. `linger` keeps the socket open briefly for a hangup's result;
  // `message`: the server's own words for the end, shown instead of the widget's.
  function finish(s, reason, linger, message) {
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
      setState('ended', null, reason, message);
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

  // ---------- pre-flight check (widget/preflight.md) ----------

  // A short echo call to the server: round-trip time, jitter and loss of this network, and the MOS they predict.
  async function preflight() {
    if (!supported()) return null;
    var s = { seq: 0, pending: {} }, pc = null, stream = null, id = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      await openSocket(s);
      var hi = await request(s, 'hello', {});
      if (!hi) throw new Error('hello refused');
      pc = new RTCPeerConnection({ iceServers: hi.ice_servers || [] });
      stream.getTracks().forEach(function (t) { pc.addTrack(t, stream); });
      var dc = pc.createDataChannel('preflight'), early = [];
      var sendCandidate = function (c) {
        if (!id) return early.push(c);
        var o = c && (c.toJSON ? c.toJSON() : c);
        request(s, 'preflight.candidate', { preflight_id: id, candidate: o ? {
          candidate: o.candidate, sdpMid: o.sdpMid, sdpMLineIndex: o.sdpMLineIndex } : null });
      };
      pc.onicecandidate = function (e) { sendCandidate(e.candidate); };
      // The echo must be consumed (and not heard): a muted element plays it.
      var ear = new Audio();
      ear.muted = true;
      pc.ontrack = function (e) { ear.srcObject = e.streams[0] || new MediaStream([e.track]); ear.play().catch(function () {}); };
      await pc.setLocalDescription(await pc.createOffer());
      var r = await request(s, 'preflight.start', { sdp: pc.localDescription.sdp });
      if (!r) throw new Error('refused: ' + (s.error && s.error.message));
      id = r.preflight_id;
      early.splice(0).forEach(sendCandidate);
      await pc.setRemoteDescription({ type: 'answer', sdp: r.sdp });
      var rtts = await pings(dc, 10, 200);
      await echoedFor(pc, 3000);
      return measure(await pc.getStats(), rtts);
    } catch (e) {
      warn('pre-flight check failed', e);
      return null;
    } finally {
      if (id) request(s, 'preflight.stop', { preflight_id: id });
      if (pc) pc.close();
      stopStream(stream);
      setTimeout(function () { closeSocket(s); }, 500);
    }
  }

  function openSocket(s) {
    return new Promise(function (resolve, reject) {
      var ws = s.ws = new WebSocket(cfg.wsUrl);
      ws.onopen = resolve;
      ws.onclose = function () { reject(new Error('no connection to the server')); };
      ws.onmessage = safe(function (e) { onMessage(s, e.data); });
    });
  }

  // When the channel opens: `n` pings `gap` ms apart, each answered within 1 s or lost. Resolves with the RTTs (ms).
  function pings(dc, n, gap) {
    return new Promise(function (resolve, reject) {
      var rtts = [], sent = {}, left = n, seq = 0;
      var done = function () { if (--left === 0) resolve(rtts); };
      var failed = setTimeout(function () { reject(new Error('the data channel did not open')); }, 10000);
      dc.onmessage = function (e) {
        var m;
        try { m = JSON.parse(e.data); } catch (err) { return; }
        if (!sent[m.seq]) return;
        clearTimeout(sent[m.seq]);
        delete sent[m.seq];
        rtts.push(performance.now() - m.t);
        done();
      };
      dc.onopen = function () {
        clearTimeout(failed);
        var tick = setInterval(function () {
          if (seq === n) return clearInterval(tick);
          var k = seq++;
          sent[k] = setTimeout(function () { delete sent[k]; done(); }, 1000);
          if (dc.readyState === 'open') dc.send(JSON.stringify({ seq: k, t: performance.now() }));
        }, gap);
      };
    });
  }

  // Wait until the echoed audio has flowed for `ms` (at most 8 s in all).
  async function echoedFor(pc, ms) {
    var first = 0, t0 = Date.now();
    while (Date.now() - t0 < 8000) {
      if (inbound(await pc.getStats()).got > 0 && !first) first = Date.now();
      if (first && Date.now() - first >= ms) return;
      await new Promise(function (ok) { setTimeout(ok, 250); });
    }
  }

  function inbound(report) {
    var o = { jitter: 0, lost: 0, got: 0, rtcpRtt: null, upLost: null, upFraction: null, sent: 0 };
    report.forEach(function (r) {
      if ((r.kind || r.mediaType) !== 'audio') return;
      if (r.type === 'inbound-rtp') {
        o.jitter = Math.max(o.jitter, (r.jitter || 0) * 1000);
        o.lost += Math.max(0, r.packetsLost || 0);
        o.got += r.packetsReceived || 0;
      } else if (r.type === 'remote-inbound-rtp') {
        if (r.roundTripTime !== undefined) o.rtcpRtt = r.roundTripTime * 1000;
        if (r.packetsLost !== undefined) o.upLost = r.packetsLost;
        if (r.fractionLost !== undefined) o.upFraction = r.fractionLost;
      } else if (r.type === 'outbound-rtp') {
        o.sent += r.packetsSent || 0;
      }
    });
    return o;
  }

  // The metrics of widget/preflight.md: RTT from the pings (else RTCP), jitter and loss of the echo both ways.
  function measure(report, rtts) {
    var o = inbound(report);
    rtts.sort(function (a, b) { return a - b; });
    var rtt = rtts.length >= 5 ? rtts[rtts.length >> 1] : o.rtcpRtt;
    var down = o.got + o.lost ? o.lost / (o.got + o.lost) : 0;
    var up = o.upLost !== null && o.sent ? o.upLost / o.sent : o.upFraction || 0;
    up = Math.min(1, Math.max(0, up));
    var loss = 100 * (1 - (1 - down) * (1 - up));
    return { rtt_ms: rtt === null ? null : round(rtt), jitter_ms: round(o.jitter), loss_pct: round(loss),
      mos: rtt === null ? null : Math.round(mos(rtt, o.jitter, loss) * 1000) / 1000,
      pings_sent: 10, pings_received: rtts.length, packets: o.got };
  }

  function round(x) { return Math.round(x * 100) / 100; }

  // The simplified ITU-T G.107 E-model, as signaling/echo.py's estimate_mos (the reference, with the same examples).
  function mos(rtt, jitter, loss) {
    var latency = Math.max(0, rtt) / 2 + 2 * Math.max(0, jitter) + 10;
    var r = 93.2 - (latency < 160 ? latency / 40 : (latency - 120) / 10) - 2.5 * Math.min(100, Math.max(0, loss));
    r = Math.min(100, Math.max(0, r));
    return Math.min(4.5, Math.max(1, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)));
  }

  // ---------- public API ----------

  var COMMANDS = { call: start, hangup: hangup, on: on, mute: mute, stats: stats, consent: consent, conversion: conversion,
    preflight: preflight };

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
      warn('cannot show the widget', e);
    }
  }

  function init() {
    try { w.localStorage.removeItem('talk_vt'); } catch (e) { /* the old server-issued token is no longer used */ }
    // The API works at once; commands the page queued before we loaded (consent first, typically) run in order, so a
    // queued talk('consent', false) is applied before the first page view.
    var queued = (prev && prev.q) || [];
    w.talk = talk;
    for (var i = 0; i < queued.length; i++) talk.apply(null, queued[i]);
    safe(watchHistory)();
    // Call buttons of the page itself: any element with data-talk-seller (a masked endpoint token, with an optional
    // data-talk-listing) or data-talk-queue starts that call.
    d.addEventListener('click', safe(function (e) {
      var el = e.target && e.target.closest && e.target.closest('[data-talk-seller],[data-talk-queue]');
      if (!el) return;
      e.preventDefault();
      start({ seller: el.getAttribute('data-talk-seller'), listing: el.getAttribute('data-talk-listing'),
        queue: el.getAttribute('data-talk-queue') });
    }));
    // Leaving, or maybe never coming back (a hidden tab may be discarded): send what is queued now.
    w.addEventListener('pagehide', safe(leaving));
    d.addEventListener('visibilitychange', safe(function () { if (d.visibilityState === 'hidden') leaving(); }));
    // A prerendered page is not viewed until the shopper navigates to it.
    if (d.prerendering) d.addEventListener('prerenderingchange', safe(landed), { once: true });
    else safe(landed)();
    // The UI needs <body>.
    if (d.body) boot();
    else d.addEventListener('DOMContentLoaded', safe(boot));
  }

  function landed() {
    pageview();
    var callId = takeCallParam();
    if (callId) loadSurvey(callId);
  }

  try { init(); } catch (e) { warn('internal error', e); }
})(window, document);
