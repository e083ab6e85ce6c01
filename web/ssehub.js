/*
 * ssehub.js: a small helper over the browser's EventSource for ssehub (and
 * any Mercure hub). Use it as a plain script (it defines `SSEHub`):
 *
 *   <script src="https://your-hub/ssehub.js"></script>
 *   <script>
 *     const sub = SSEHub.subscribe({
 *       topics: ['tasks/42'],
 *       on: { state: (data) => render(JSON.parse(data)) },
 *       onComplete: () => showDone(),
 *       onError: ({ reason, message }) => showProblem(reason, message),
 *     });
 *   </script>
 *
 * or as an ES module (ssehub.mjs, with types in ssehub.d.mts):
 *
 *   import { subscribe } from './ssehub.mjs';
 *
 * What it adds to EventSource:
 *  - listens to the event types you name in `on` (plus `message`);
 *  - closes the connection when every topic has sent `complete`, so the
 *    browser does not reconnect to a finished task (state 'finished');
 *  - stops when the hub says a newer connection with the same client id
 *    replaced this one (state 'replaced'; `takeBack()` reconnects);
 *  - applies `reset` (history could not cover the gap) by calling onReset;
 *  - ignores an event whose id it has already delivered;
 *  - says why a connection failed (onError: 'network', 'cors', 'auth',
 *    'refused', 'replaced', 'invalid', 'server'), and reconnects by itself
 *    where waiting helps (a busy or restarting hub), which EventSource
 *    alone does not do after an error status;
 *  - acknowledges what the page has shown (`ack: true` with a clientId), so
 *    a reloaded page continues after it and the backend can read it.
 * Resume after a network drop is EventSource's own: it reconnects and sends
 * Last-Event-ID, and the hub replays exactly what was missed.
 */
(function (global) {
  'use strict';

  var HUB_PATH = '/.well-known/mercure';
  var REMEMBERED_IDS = 1000;
  // Acknowledgements are sent at most this often (and once more when the
  // page is hidden or closed).
  var ACK_INTERVAL_MS = 250;
  // Waits before the helper's own reconnects (after an error status), when
  // the hub does not say how long: doubled each time, up to the last one.
  var BACKOFF_MS = [1000, 2000, 5000, 10000, 30000];

  /**
   * Subscribes to topics. Options:
   *   hub            hub URL (default: this origin's /.well-known/mercure)
   *   topics         topic selectors (exact topics, '*', or URI templates)
   *   lastEventId    resume after this id; 'earliest' replays all history
   *   clientId       a client id for a per-client channel (one connection
   *                  per client id: a newer one replaces this one)
   *   ack            acknowledge shown events for clientId (default false)
   *   withCredentials  send cookies (the auth cookie) to a cross-origin hub
   *   on             { eventType: function (data, event) } handlers
   *   onReset        function ({reason, topics}): history did not cover the gap
   *   onComplete     function (topic): a topic finished
   *   onError        function ({reason, message, status, code, retrying})
   *   onStateChange  function (state): 'connecting' | 'open' | 'reconnecting' |
   *                  'finished' | 'replaced' | 'failed' | 'closed'
   * Returns { state, lastEventId, error, close(), takeBack() }.
   */
  function subscribe(options) {
    var opts = options || {};
    var topics = opts.topics || [];
    if (!topics.length && !opts.clientId) {
      throw new Error('SSEHub.subscribe needs at least one topic');
    }
    if (opts.ack && !opts.clientId) {
      throw new Error('SSEHub.subscribe: ack needs a clientId');
    }
    var hubUrl = new URL(opts.hub || HUB_PATH, global.location.href);

    // Exact topics finish with `complete`; a wildcard never does.
    var open = {};
    var openCount = 0;
    var wildcard = topics.some(function (t) { return t === '*' || t.indexOf('{') >= 0; });
    topics.forEach(function (t) { if (!open[t]) { open[t] = true; openCount++; } });

    var seen = new Set();
    var seenOrder = [];
    var handle = {
      state: 'connecting',
      lastEventId: opts.lastEventId || '',
      error: null,
      close: function () { stop('closed'); },
      takeBack: takeBack,
    };
    var source = null;
    var retryTimer = null;
    var failures = 0;
    var wasOpen = false;
    var acks = opts.ack ? acknowledger(hubUrl, opts) : null;

    function streamUrl(lastEventId) {
      var url = new URL(hubUrl.toString());
      topics.forEach(function (topic) { url.searchParams.append('topic', topic); });
      if (lastEventId) url.searchParams.set('lastEventID', lastEventId);
      if (opts.clientId) url.searchParams.set('client_id', opts.clientId);
      return url.toString();
    }

    // Not open, and trying to be.
    function trying() {
      setState(wasOpen ? 'reconnecting' : 'connecting');
    }

    function isTrying() {
      return handle.state === 'connecting' || handle.state === 'reconnecting';
    }

    function setState(state) {
      if (handle.state === state) return;
      handle.state = state;
      if (opts.onStateChange) opts.onStateChange(state);
    }

    function report(error) {
      handle.error = error;
      if (opts.onError) opts.onError(error);
    }

    function stop(state) {
      clearTimeout(retryTimer);
      if (source) source.close();
      source = null;
      if (acks) acks.flush();
      if (acks && state === 'closed') { acks.detach(); acks = null; }
      setState(state);
    }

    // After 'replaced' or 'failed' only: a closed or finished subscription
    // stays so.
    function takeBack() {
      if (source || (handle.state !== 'replaced' && handle.state !== 'failed')) return;
      clearTimeout(retryTimer);
      handle.error = null;
      connect(handle.lastEventId);
    }

    // True the first time an id is seen; false for a repeat.
    function firstTime(id) {
      if (!id) return true;
      if (seen.has(id)) return false;
      seen.add(id);
      seenOrder.push(id);
      if (seenOrder.length > REMEMBERED_IDS) seen.delete(seenOrder.shift());
      return true;
    }

    function connect(lastEventId) {
      var es = new EventSource(streamUrl(lastEventId), { withCredentials: !!opts.withCredentials });
      source = es;
      trying();
      var handlers = opts.on || {};
      Object.keys(handlers).forEach(function (type) {
        if (type === 'complete' || type === 'reset' || type === 'replaced') return;
        es.addEventListener(type, function (event) {
          // EventSource's own `error` (a connection problem) is no event of
          // the hub's: only messages (they have data) go to handlers.
          if (!('data' in event)) return;
          // Subscription events (`mercure`) are live only and carry the
          // stream's position, an id already seen: they are never replayed,
          // so never duplicates.
          if (type === 'mercure') return handlers[type](event.data, event);
          if (!firstTime(event.lastEventId)) return;
          if (event.lastEventId) {
            handle.lastEventId = event.lastEventId;
            if (acks) acks.shown(event.lastEventId);
          }
          handlers[type](event.data, event);
        });
      });
      // `reset`, `complete` and `replaced` carry no id of an event: never
      // deduplicate them.
      es.addEventListener('reset', function (event) {
        var info;
        try { info = JSON.parse(event.data); } catch (e) { info = { reason: 'unknown', topics: [] }; }
        if (opts.onReset) opts.onReset(info);
      });
      es.addEventListener('complete', function (event) {
        var topic = event.data;
        if (opts.onComplete) opts.onComplete(topic);
        if (open[topic]) { delete open[topic]; openCount--; }
        if (openCount <= 0 && !wildcard) stop('finished');
      });
      es.addEventListener('replaced', function () {
        stop('replaced');
        report({
          reason: 'replaced', retrying: false, status: 0, code: 'connection_replaced',
          message: 'this connection was taken over by another one with the same client id (another tab?)',
        });
      });
      // A message published as type `open` or `error` (other hubs allow it)
      // reaches these handlers too: only the connection's own events count.
      es.onopen = function (event) {
        if (event && 'data' in event) return;
        failures = 0;
        wasOpen = true;
        handle.error = null;
        setState('open');
      };
      es.onerror = function (event) {
        if (source !== es || (event && 'data' in event)) return;
        if (es.readyState !== EventSource.CLOSED) {
          // EventSource reconnects by itself (a dropped connection, an
          // ended stream). Twice in a row without opening: the hub is
          // unreachable, say so once.
          if (isTrying() && !(handle.error && handle.error.reason === 'network')) {
            report({
              reason: 'network', retrying: true, status: 0, code: '',
              message: 'the hub cannot be reached; reconnecting',
            });
          }
          trying();
          return;
        }
        // Given up by EventSource: an error status, a wrong content type,
        // or CORS. Ask the hub why, the same way, with fetch.
        source = null;
        trying();
        diagnose(streamUrl(handle.lastEventId), opts.withCredentials).then(decide);
      };
    }

    function decide(why) {
      if (!isTrying() || source) return;
      var retry = why.retryAfter != null ? why.retryAfter
        : BACKOFF_MS[Math.min(failures, BACKOFF_MS.length - 1)];
      why.retrying = why.reason === 'refused' || why.reason === 'server' || why.reason === 'network';
      failures++;
      report(why);
      if (why.reason === 'replaced') return stop('replaced');
      if (!why.retrying) return stop('failed');
      retryTimer = setTimeout(function () { connect(handle.lastEventId); }, retry);
    }

    connect(handle.lastEventId);
    return handle;
  }

  /**
   * Why a stream request fails, found by making it again with fetch (which,
   * unlike EventSource, shows the status and the hub's JSON error).
   * Resolves to {reason, status, code, message, retryAfter}.
   */
  function diagnose(url, withCredentials) {
    var controller = typeof AbortController !== 'undefined' ? new AbortController() : null;
    var init = {
      headers: { accept: 'text/event-stream' },
      credentials: withCredentials ? 'include' : 'same-origin',
      cache: 'no-store',
      signal: controller ? controller.signal : undefined,
    };
    return fetch(url, init).then(function (res) {
      if (res.ok) {
        if (controller) controller.abort();
        var type = res.headers.get('content-type') || '';
        if (type.indexOf('text/event-stream') !== 0) {
          // Something between the page and the hub (a proxy, a login page)
          // answers instead: waiting does not help.
          return {
            reason: 'invalid', status: res.status, code: '', retryAfter: null,
            message: 'the answer is ' + (type || 'untyped') + ', not an event stream: is the hub URL right?',
          };
        }
        // It works again (it was a passing failure): reconnect, after a wait.
        return { reason: 'network', status: res.status, code: '', message: 'the connection failed; reconnecting', retryAfter: null };
      }
      var retryAfter = parseFloat(res.headers.get('retry-after'));
      return res.json().catch(function () { return {}; }).then(function (body) {
        var status = res.status;
        var code = body.error || '';
        var reason = code === 'connection_replaced' ? 'replaced'
          : status === 401 || status === 403 ? 'auth'
          : status === 429 || status === 503 ? 'refused'
          : status >= 500 ? 'server' : 'invalid';
        return {
          reason: reason, status: status, code: code,
          message: body.message || ('the hub answered ' + status),
          retryAfter: isNaN(retryAfter) ? null : retryAfter * 1000,
        };
      });
    }, function () {
      // No answer readable here: either the hub is unreachable, or it
      // answered but not to this origin (CORS). An opaque request tells
      // the two apart: it succeeds when the hub is there.
      return fetch(url, { mode: 'no-cors', cache: 'no-store' }).then(function (res) {
        if (res.body && res.body.cancel) res.body.cancel();
        return {
          reason: 'cors', status: 0, code: '', retryAfter: null,
          message: 'the hub does not allow this page\u2019s origin, ' + global.location.origin +
            ': start it with --cors-origin ' + global.location.origin + ' (see docs/BROWSER.md)',
        };
      }, function () {
        return { reason: 'network', status: 0, code: '', message: 'the hub cannot be reached; reconnecting', retryAfter: null };
      });
    });
  }

  /**
   * Sends the last shown event id for a client id to the hub, at most every
   * ACK_INTERVAL_MS, and once more (as a beacon) when the page is hidden.
   */
  function acknowledger(hubUrl, opts) {
    var url = new URL('/v1/ack', hubUrl).toString();
    var pending = null;
    var timer = null;
    function body(id) {
      var form = new URLSearchParams();
      form.set('client_id', opts.clientId);
      form.set('last_event_id', id);
      return form;
    }
    function send() {
      timer = null;
      if (pending === null) return;
      var id = pending;
      pending = null;
      fetch(url, {
        method: 'POST', body: body(id), keepalive: true,
        credentials: opts.withCredentials ? 'include' : 'same-origin',
      }).catch(function () { if (pending === null) pending = id; });
    }
    function flush() {
      clearTimeout(timer);
      send();
    }
    function hidden() {
      if (global.document && global.document.visibilityState === 'hidden') flush();
    }
    global.addEventListener('pagehide', flush);
    global.addEventListener('visibilitychange', hidden);
    return {
      shown: function (id) {
        pending = id;
        if (!timer) timer = setTimeout(send, ACK_INTERVAL_MS);
      },
      flush: flush,
      detach: function () {
        global.removeEventListener('pagehide', flush);
        global.removeEventListener('visibilitychange', hidden);
      },
    };
  }

  global.SSEHub = { subscribe: subscribe };
})(typeof globalThis !== 'undefined' ? globalThis : this);
