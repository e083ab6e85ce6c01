/*
 * ssehub.js: a small helper over the browser's EventSource for ssehub (and
 * any Mercure hub). Include it with a plain script tag:
 *
 *   <script src="https://your-hub/ssehub.js"></script>
 *   <script>
 *     const sub = SSEHub.subscribe({
 *       topics: ['tasks/42'],
 *       on: { state: (data) => render(JSON.parse(data)) },
 *       onComplete: () => showDone(),
 *     });
 *   </script>
 *
 * What it adds to EventSource:
 *  - listens to the event types you name in `on` (plus `message`);
 *  - closes the connection when every topic has sent `complete`, so the
 *    browser does not reconnect to a finished task;
 *  - applies `reset` (history could not cover the gap) by calling onReset;
 *  - ignores an event whose id it has already delivered;
 *  - exposes the connection state: 'connecting', 'open' or 'closed'.
 * Resume after a network drop is EventSource's own: it reconnects and sends
 * Last-Event-ID, and the hub replays exactly what was missed.
 */
(function (global) {
  'use strict';

  var HUB_PATH = '/.well-known/mercure';
  var REMEMBERED_IDS = 1000;

  /**
   * Subscribes to topics. Options:
   *   hub            hub URL (default: this origin's /.well-known/mercure)
   *   topics         topic selectors (exact topics, '*', or URI templates)
   *   lastEventId    resume after this id; 'earliest' replays all history
   *   clientId       a client id for a per-client channel
   *   withCredentials  send cookies (the auth cookie) to a cross-origin hub
   *   on             { eventType: function (data, event) } handlers
   *   onReset        function ({reason, topics}) — history did not cover the gap
   *   onComplete     function (topic) — a topic finished
   *   onStateChange  function (state) — 'connecting' | 'open' | 'closed'
   * Returns { state, lastEventId, close() }.
   */
  function subscribe(options) {
    var opts = options || {};
    var topics = opts.topics || [];
    if (!topics.length && !opts.clientId) {
      throw new Error('SSEHub.subscribe needs at least one topic');
    }
    var url = new URL(opts.hub || HUB_PATH, global.location.href);
    topics.forEach(function (topic) { url.searchParams.append('match', topic); });
    if (opts.lastEventId) url.searchParams.set('lastEventID', opts.lastEventId);
    if (opts.clientId) url.searchParams.set('client_id', opts.clientId);

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
      close: close,
    };

    var source = new EventSource(url.toString(), { withCredentials: !!opts.withCredentials });

    function setState(state) {
      if (handle.state === state) return;
      handle.state = state;
      if (opts.onStateChange) opts.onStateChange(state);
    }

    function close() {
      source.close();
      setState('closed');
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

    function listen(type, handler) {
      source.addEventListener(type, function (event) {
        if (!firstTime(event.lastEventId)) return;
        if (event.lastEventId) handle.lastEventId = event.lastEventId;
        handler(event.data, event);
      });
    }

    var handlers = opts.on || {};
    Object.keys(handlers).forEach(function (type) {
      if (type !== 'complete' && type !== 'reset') listen(type, handlers[type]);
    });

    // `reset` and `complete` carry no id of their own: never deduplicate them.
    source.addEventListener('reset', function (event) {
      var info;
      try { info = JSON.parse(event.data); } catch (e) { info = { reason: 'unknown', topics: [] }; }
      if (opts.onReset) opts.onReset(info);
    });
    source.addEventListener('complete', function (event) {
      var topic = event.data;
      if (opts.onComplete) opts.onComplete(topic);
      if (open[topic]) { delete open[topic]; openCount--; }
      if (openCount <= 0 && !wildcard) close();
    });

    source.onopen = function () { setState('open'); };
    source.onerror = function () {
      setState(source.readyState === EventSource.CLOSED ? 'closed' : 'connecting');
    };
    return handle;
  }

  global.SSEHub = { subscribe: subscribe };
})(typeof window !== 'undefined' ? window : this);
