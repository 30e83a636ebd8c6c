/*! Talk widget loader. Embed:
 *  <script src="https://HOST/widget/talk.js" data-site="SITE_KEY" async></script>
 * Kept tiny on purpose: it only reads the embed config, installs the command queue and loads talk-core.js,
 * so the host page pays almost nothing until the widget is needed. Docs: widget/README.md */
(function (w, d) {
  'use strict';
  var P = 'talk: ';

  // Only values matching these can reach the widget's CSS, so data-* attributes cannot inject styles.
  var COLOR = /^(#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})|[a-z]{3,20}|(?:rgb|hsl)a?\([0-9\s.,%\/+-]{1,60}\))$/i;

  function findScript() {
    // currentScript can be null (e.g. when the loader is injected by a tag manager), hence the query fallback.
    var s = d.currentScript;
    if (s && /\/widget\/talk\.js(?:[?#]|$)/.test(s.src)) return s;
    return d.querySelector('script[src*="/widget/talk.js"]');
  }

  function pick(value, fallback, ok) {
    value = (value || '').trim();
    return value && ok(value) ? value : fallback;
  }

  function readConfig(s) {
    var a = s.dataset, src = new URL(s.src, location.href);
    var site = (a.site || '').trim();
    if (!site) return null;
    var lang = (a.lang || '').trim().toLowerCase().slice(0, 2);
    var timeout = +(a.sessionTimeout || '').trim() || 0;
    return {
      site: site,
      // talk-core.js sits next to talk.js; the query string is kept so cache-busting (?v=…) applies to both.
      coreUrl: new URL('talk-core.js' + src.search, src).href,
      wsUrl: (src.protocol === 'https:' ? 'wss://' : 'ws://') + src.host + '/ws/v1?site=' + encodeURIComponent(site),
      queue: pick(a.queue, 'support', function (v) { return v.length <= 64; }),
      label: (a.label || '').trim().slice(0, 60),
      color: pick(a.color, '#0b57d0', COLOR.test.bind(COLOR)),
      textColor: pick(a.textColor, '#fff', COLOR.test.bind(COLOR)),
      position: a.position === 'bottom-left' ? 'bottom-left' : 'bottom-right',
      lang: /^(en|de|fr)$/.test(lang) ? lang : 'en',
      // The HTTP API (page views, conversions, surveys) lives on the same host as talk.js.
      api: src.origin,
      track: (a.track || '').trim().toLowerCase() !== 'false',
      // data-button="false": no floating button (the page has its own data-talk-* buttons, or calls talk('call')).
      button: (a.button || '').trim().toLowerCase() !== 'false',
      consent: (a.consent || '').trim().toLowerCase() === 'required',
      // Minutes without activity after which a new session starts: a number in (0, 1440], else 30.
      sessionMinutes: timeout > 0 && timeout <= 1440 ? timeout : 30
    };
  }

  try {
    if (w.__talkCfg) return console.warn(P + 'loaded twice; ignoring the second embed');
    var s = findScript();
    var cfg = s && readConfig(s);
    if (!cfg) return console.warn(P + 'missing data-site on the talk.js <script>');
    w.__talkCfg = cfg;
    // Plausible-style stub: commands issued before the core arrives are queued and replayed by the core.
    // A stub the page defined itself (with its queue) is kept as is.
    w.talk = w.talk || function () { (w.talk.q = w.talk.q || []).push(arguments); };
    var c = d.createElement('script');
    c.src = cfg.coreUrl;
    c.async = true;
    (d.head || d.documentElement).appendChild(c);
  } catch (e) {
    console.warn(P + 'loader failed', e);
  }
})(window, document);
