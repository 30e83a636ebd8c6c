// Talk voicemail inbox of the agent console, written so the seller console can use it too: lists the account's
// open voicemails (docs/protocol.md, "Voicemail": voicemail.list, voicemail.handled, the event voicemail.new),
// plays each one from /voicemail/<id>.wav and marks it handled. The page owns the WebSocket; it hands in its
// `request` function and forwards voicemail.new here. Everything a voicemail says (queue, listing, label, alias)
// is untrusted text and only ever set with textContent.
// No framework and no build step: this file is served as is, loaded before the page's own script.
(function () {
  'use strict';

  // Untrusted values as display text.
  function text(value) {
    if (value === null || value === undefined) return '';
    return typeof value === 'string' ? value : String(value);
  }

  function isObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  // Only our own server's audio URLs: /voicemail/<id>.wav.
  function audioUrl(info) {
    const url = text(info.url);
    return /^\/voicemail\/[A-Za-z0-9_-]+\.wav$/.test(url) ? url : '';
  }

  function formatSeconds(value) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) return '';
    const total = Math.round(value);
    return total < 60 ? total + ' s' : Math.floor(total / 60) + ' min ' + (total % 60) + ' s';
  }

  function formatDateTime(value) {
    const date = typeof value === 'string' && value ? new Date(value) : null;
    if (!date || Number.isNaN(date.getTime())) return '';
    return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  function listOf(reply) {
    const list = reply.result && Array.isArray(reply.result.voicemails) ? reply.result.voicemails : [];
    return list.filter((info) => isObject(info) && text(info.id));
  }

  function errorText(reply) {
    const err = reply.error || {};
    return err.message || err.code || 'unknown error';
  }

  // options:
  //   root: the element that gets data-voicemails (the open count), list: the <ul>, count: the "N new" badge,
  //   empty: the "No voicemail." line;
  //   request(type, fields, {quiet}): the page's request, resolving with the result frame (never rejecting);
  //   describe(info) → {title, detail, label}: the item's heading, its second line ('' for none) and the player's
  //     accessible name, from a voicemail as voicemail.list (or, until the list has it, voicemail.new) describes it;
  //   announce(info) → the status line's text when a voicemail arrives;
  //   showStatus(text, kind), reportFault(context, err): the page's status line.
  function createInbox(options) {
    const ui = { root: options.root, list: options.list, count: options.count, empty: options.empty };
    const entries = new Map(); // id -> {info, element, title, detail, when, duration, audio, button, state, handled}
    let listSeq = 0; // the latest voicemail.list asked; older replies are dropped

    function fetchList() {
      return options.request('voicemail.list', { include_handled: false }, { quiet: true });
    }

    // After (re)connecting: the server's list is the truth; items marked handled here meanwhile drop out.
    async function load() {
      const seq = ++listSeq;
      const reply = await fetchList();
      if (seq !== listSeq) return;
      if (!reply.success) {
        options.showStatus('Could not load voicemail: ' + errorText(reply), 'error');
        return;
      }
      entries.clear();
      ui.list.replaceChildren();
      for (const info of listOf(reply)) add(info, false);
      updateCount();
    }

    // voicemail.new carries only some fields (no queue, no label): the list has them all, so it is asked again.
    async function onNew(msg) {
      const news = msg.voicemail;
      if (!isObject(news) || !text(news.id)) return;
      const id = text(news.id);
      const seq = ++listSeq;
      const reply = await fetchList();
      if (seq === listSeq && reply.success) merge(listOf(reply));
      if (!entries.has(id)) add(news, true); // the list failed, or a newer one will fill in the rest
      updateCount();
      options.showStatus(options.announce(entries.get(id).info), 'info');
    }

    // A fresh list while the inbox is open: new items on top, known ones updated, and items the server no longer
    // lists as open (another agent of the queue marked them handled) shown as handled, so nothing vanishes mid-play.
    function merge(list) {
      const listed = new Set();
      const fresh = [];
      for (const info of list) {
        const id = text(info.id);
        listed.add(id);
        const entry = entries.get(id);
        if (entry) fill(entry, info);
        else fresh.push(info);
      }
      for (const info of fresh.reverse()) add(info, true);
      for (const [id, entry] of entries) {
        if (!listed.has(id) && !entry.handled) showHandled(entry, 'Handled elsewhere');
      }
    }

    function add(info, newest) {
      const id = text(info.id);
      if (!id || entries.has(id)) return;
      const li = document.createElement('li');
      li.className = 'vm-item';
      li.dataset.voicemailId = id;
      li.dataset.handled = 'false';

      const head = document.createElement('div');
      head.className = 'vm-head';
      const title = document.createElement('span');
      title.className = 'vm-title';
      const when = document.createElement('time');
      when.className = 'vm-when';
      head.append(title, when);

      const about = document.createElement('p');
      about.className = 'vm-about';
      const detail = document.createElement('span');
      detail.className = 'vm-detail';
      const duration = document.createElement('span');
      duration.className = 'vm-duration';
      about.append(detail, duration);

      const audio = document.createElement('audio');
      audio.controls = true;
      audio.preload = 'none';

      const actions = document.createElement('div');
      actions.className = 'vm-actions';
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'btn btn-secondary btn-small';
      button.textContent = 'Mark handled';
      button.addEventListener('click', () => {
        markHandled(id).catch((err) => options.reportFault('Marking the voicemail handled', err));
      });
      const state = document.createElement('span');
      state.className = 'vm-state';
      state.setAttribute('role', 'status');
      actions.append(button, state);

      li.append(head, about, audio, actions);
      const entry = { info, element: li, title, detail, when, duration, audio, button, state, handled: false };
      entries.set(id, entry);
      fill(entry, info);
      if (info.handled === true) showHandled(entry, 'Handled');
      if (newest) ui.list.prepend(li);
      else ui.list.append(li);
    }

    function fill(entry, info) {
      entry.info = info;
      const shown = options.describe(info);
      entry.title.textContent = text(shown.title);
      entry.detail.textContent = text(shown.detail);
      entry.detail.hidden = !entry.detail.textContent;
      entry.when.dateTime = text(info.created_at);
      entry.when.textContent = formatDateTime(info.created_at);
      entry.duration.textContent = formatSeconds(info.duration_seconds);
      entry.audio.setAttribute('aria-label', text(shown.label) || 'Voicemail');
      const url = audioUrl(info);
      // Setting the same src again would restart a message being played.
      if (url && entry.audio.getAttribute('src') !== url) entry.audio.src = url;
    }

    function showHandled(entry, label) {
      entry.handled = true;
      entry.element.dataset.handled = 'true';
      entry.button.disabled = true;
      entry.button.hidden = true;
      entry.state.textContent = label;
    }

    async function markHandled(id) {
      const entry = entries.get(id);
      if (!entry || entry.handled) return;
      entry.button.disabled = true;
      entry.state.textContent = 'Saving…';
      const reply = await options.request('voicemail.handled', { voicemail_id: id }, { quiet: true });
      if (entries.get(id) !== entry || entry.handled) return; // the list was reloaded meanwhile
      if (reply.success) {
        showHandled(entry, 'Handled');
        updateCount();
      } else {
        entry.button.disabled = false;
        entry.state.textContent = 'Not saved: ' + errorText(reply);
      }
    }

    function updateCount() {
      let open = 0;
      for (const entry of entries.values()) if (!entry.handled) open += 1;
      ui.root.dataset.voicemails = String(open);
      ui.count.textContent = open ? String(open) + ' new' : '';
      ui.count.hidden = !open;
      ui.empty.hidden = entries.size > 0;
    }

    updateCount();
    return { load, onNew };
  }

  window.talkVoicemailInbox = createInbox;
})();
