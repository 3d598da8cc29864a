"""
The status page: static HTML, CSS, a script and an icon, no external asset.

The HTML holds no figure at all: the script fetches C{status.json} every
two seconds and rebuilds the page's main part in place. It builds every
node with C{createElement} and C{textContent} only, never markup from
strings, so a nickname, a room name or a topic (attacker text) can only ever
be text; the Content-Security-Policy the admin listener sends (scripts and
styles from this origin only, no inline code, Trusted Types required with no
policy allowed) would stop any script injection even if that rule were
broken. URLs are relative, so the page also works behind a path prefix.
"""

from __future__ import annotations

POLL_SECONDS = 2

HTML = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>socksvc status</title>
<link rel="icon" href="favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="status.css">
<script src="status.js" defer></script>
</head>
<body>
<header>
<h1>socksvc</h1>
<span id="state" class="state">loading</span>
<span id="summary" class="summary"></span>
</header>
<main id="main"><p>Loading the daemon's figures&hellip;</p></main>
<noscript><p>This page updates itself with JavaScript. The same figures are at
<a href="status.json">status.json</a> and <a href="metrics">metrics</a>.</p></noscript>
<footer>Read-only. Figures as JSON: <a href="status.json">status.json</a>;
Prometheus: <a href="metrics">metrics</a>.</footer>
</body>
</html>
"""

CSS = b"""
:root { --fg: #1b1f24; --muted: #5b6570; --bg: #f6f7f9; --card: #fff; --line: #d8dde3;
  --ok: #1a7f37; --bad: #b42318; --warn: #9a6700; --accent: #0b5cad; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e9ed; --muted: #9aa4ae; --bg: #11151a; --card: #1a2027; --line: #2d3640;
    --ok: #4ac26b; --bad: #ff7b72; --warn: #d4a72c; --accent: #6cb6ff; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .4rem 1rem; padding: .8rem 1rem;
  border-bottom: 1px solid var(--line); background: var(--card); }
h1 { font-size: 1.25rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 0 0 .3rem; overflow-wrap: anywhere; }
h3 { font-size: .9rem; margin: .8rem 0 .2rem; color: var(--muted); font-weight: 600; }
.summary, .muted, footer { color: var(--muted); }
.state { padding: .05rem .5rem; border-radius: 1rem; font-size: .8rem; border: 1px solid var(--line); }
.state.live { color: var(--ok); border-color: var(--ok); }
.state.stale { color: var(--bad); border-color: var(--bad); }
main { display: grid; gap: .8rem; padding: .8rem;
  grid-template-columns: repeat(auto-fit, minmax(min(100%, 22rem), 1fr)); }
section { background: var(--card); border: 1px solid var(--line); border-radius: .5rem; padding: .7rem .8rem;
  min-width: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.bad { color: var(--bad); }
.ok { color: var(--ok); }
.listeners { font-family: ui-monospace, monospace; font-size: .85rem; color: var(--muted);
  margin: 0 0 .4rem; overflow-wrap: anywhere; }
meter { width: 6rem; height: .8rem; vertical-align: middle; margin-left: .4rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .15rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td { overflow-wrap: anywhere; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.names { margin: 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: .2rem .4rem; }
.names li { background: var(--bg); border: 1px solid var(--line); border-radius: .3rem; padding: 0 .3rem;
  overflow-wrap: anywhere; }
footer { padding: 0 1rem 1rem; font-size: .85rem; }
a { color: var(--accent); }
"""

JS = b"""'use strict';
(function () {
  const POLL_MS = %(poll)d;
  const main = document.getElementById('main');
  const state = document.getElementById('state');
  const summary = document.getElementById('summary');

  // Every node is made here, and text only ever goes in through textContent.
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(n) { return n === null || n === undefined ? '\\u2013' : Number(n).toLocaleString('en-US'); }
  function bytes(n) {
    if (n === null || n === undefined) return '\\u2013';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + ' ' + units[i];
  }
  function perSecond(n, fmt) { return n === undefined || n === null ? '' : ' (' + fmt(n) + '/s)'; }
  function dec(n) { return n < 10 ? n.toFixed(1) : num(Math.round(n)); }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor(s %% 86400 / 3600), m = Math.floor(s %% 3600 / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + (d || h || m ? m + 'm ' : '') + s %% 60 + 's';
  }
  function when(t) { return t ? new Date(t * 1000).toISOString().replace(/\\.\\d+Z$/, 'Z') : 'never'; }
  function facts(pairs) {
    const dl = el('dl');
    for (const [name, value, figure, cls] of pairs) {
      dl.append(el('dt', null, name));
      const dd = value instanceof Node ? el('dd') : el('dd', cls, value);
      if (value instanceof Node) dd.append(value);
      if (figure) dd.dataset.figure = figure;
      dl.append(dd);
    }
    return dl;
  }
  function reasons(counts) {
    const parts = Object.entries(counts || {}).filter(([, n]) => n > 0).map(([k, n]) => k + ' ' + num(n));
    return parts.length ? parts.join(', ') : 'none';
  }
  function withMeter(text, value, max) {
    const span = el('span', null, text);
    if (max > 0) {
      const m = el('meter');
      m.min = 0; m.max = max; m.value = Math.min(value, max); m.high = max * 0.8; m.optimum = 0;
      span.append(m);
    }
    return span;
  }
  function table(headers, rows, numeric) {
    const wrap = el('div', 'scroll');
    const t = el('table');
    const tr = el('tr');
    headers.forEach((h, i) => tr.append(el('th', numeric[i] ? 'n' : null, h)));
    t.append(tr);
    for (const row of rows) {
      const r = el('tr');
      row.forEach((c, i) => r.append(el('td', numeric[i] ? 'n' : null, c)));
      t.append(r);
    }
    wrap.append(t);
    return wrap;
  }

  function connections(s, r) {
    const limit = s.limit ? num(s.limit) : 'no limit';
    return [
      ['Open', withMeter(num(s.connections) + ' / ' + limit, s.connections, s.limit), 'connections'],
      ['Peak', num(s.peak), 'peak'],
      ['Accepted', num(s.accepted) + perSecond(r.accepted, dec), 'accepted'],
      ['Refused', reasons(s.refused), 'refused'],
      ['Bytes in', bytes(s.bytes_in) + perSecond(r.bytes_in, bytes), 'bytes_in'],
      ['Bytes out', bytes(s.bytes_out) + perSecond(r.bytes_out, bytes), 'bytes_out'],
    ];
  }

  function service(s, rates, title) {
    const r = rates[s.name] || {};
    const sec = el('section');
    sec.dataset.service = s.name;
    sec.append(el('h2', null, title || (s.name + (s.type && s.type !== s.name ? ' (' + s.type + ')' : ''))));
    sec.append(el('p', 'listeners', (s.listeners || []).join(' \\u00b7 ') || 'no listener'));
    sec.append(facts(connections(s, r)));
    if (s.udp) {
      sec.append(el('h3', null, 'UDP'));
      sec.append(facts([
        ['Received', num(s.udp.received) + perSecond(r.udp_received, dec), 'udp_received'],
        ['Replied', num(s.udp.replied), 'udp_replied'],
        ['Dropped', reasons(s.udp.dropped), 'udp_dropped'],
      ]));
    }
    if (s.chat) chat(sec, s.chat, r);
    return sec;
  }

  // A chat with a bus: up (with workers, every worker's link) or down, nodes seen, entries waiting.
  function bus(b) {
    const state = b.up ? 'up' : (b.linked ? 'down in some workers (' + num(b.linked) + ' linked)' : 'down');
    return ['Bus', state + ', ' + num(b.nodes) + ' node' + (b.nodes === 1 ? '' : 's') + ', ' +
      num(b.queued) + ' queued', 'bus', b.up ? 'ok' : 'bad'];
  }

  function chat(sec, c, r) {
    sec.append(el('h3', null, 'Chat'));
    sec.append(facts([
      ['Members', num(c.members), 'members'],
      ['Rooms', num(c.rooms), 'rooms'],
      ['Lines', num(c.lines) + perSecond(r.chat_lines, dec), 'lines'],
      ['Dropped', reasons(c.dropped), 'chat_dropped'],
    ].concat(c.bus ? [bus(c.bus)] : [])));
    if (c.room_list && c.room_list.length) {
      const rows = c.room_list.map((room) => [room.name, num(room.members), room.topic]);
      const t = table(['Room', 'Members', 'Topic'], rows, [false, true, false]);
      t.dataset.figure = 'room_list';
      sec.append(t);
    }
    if (c.names && c.names.length) {
      sec.append(el('h3', null, c.names.length < c.members ? 'Some members' : 'Members'));
      const ul = el('ul', 'names');
      ul.dataset.figure = 'names';
      for (const n of c.names) ul.append(el('li', null, n));
      sec.append(ul);
    }
  }

  function daemon(f) {
    const p = f.process || {};
    const sec = el('section');
    sec.dataset.service = '';
    sec.append(el('h2', null, 'Daemon'));
    const reload = f.reload || {};
    const result = reload.last_time ? (reload.last_ok ? 'applied' : 'failed: ' + reload.last_error) : 'none yet';
    sec.append(facts([
      ['Version', f.version + ' (Python ' + f.python + ')', 'version'],
      ['PID', f.pid, 'pid'],
      ['Started', when(f.started), 'started'],
      ['Uptime', duration(f.uptime), 'uptime'],
      ['Workers', num(f.workers), 'workers'],
      ['Config', f.config, 'config'],
      ['Last reload', reload.last_time ? when(reload.last_time) : 'never', 'reload_time'],
      ['Reload result', result, 'reload_result', reload.last_ok ? null : 'bad'],
      ['Descriptors', withMeter(num(p.open_fds) + ' / ' + num(p.max_fds), p.open_fds || 0, p.max_fds || 0), 'fds'],
      ['RSS', bytes(p.rss_bytes), 'rss'],
      ['CPU', (f.rates && f.rates.cpu_percent !== undefined ? dec(f.rates.cpu_percent) + '%%, ' : '') +
        dec(p.cpu_seconds || 0) + ' s in all', 'cpu'],
    ]));
    return sec;
  }

  function render(f) {
    const rates = (f.rates && f.rates.services) || {};
    const nodes = [daemon(f)];
    let open = 0;
    for (const s of f.services || []) { nodes.push(service(s, rates)); open += s.connections; }
    if (f.admin) nodes.push(service(f.admin, rates, 'Admin listener (this page)'));
    main.replaceChildren(...nodes);
    summary.textContent = 'v' + f.version + ' \\u00b7 pid ' + f.pid + ' \\u00b7 up ' + duration(f.uptime) +
      ' \\u00b7 ' + num(open) + ' connection' + (open === 1 ? '' : 's');
  }

  async function poll() {
    try {
      const response = await fetch('status.json', { cache: 'no-store', credentials: 'same-origin' });
      if (!response.ok) throw new Error('HTTP ' + response.status);
      render(await response.json());
      state.textContent = 'live';
      state.className = 'state live';
      state.title = 'updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      state.textContent = 'stale';
      state.className = 'state stale';
      state.title = 'cannot reach the daemon: ' + e.message;
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  poll();
})();
""" % {b"poll": POLL_SECONDS * 1000}

FAVICON = b"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">\
<rect width="16" height="16" rx="3" fill="#0b5cad"/>\
<path d="M4 11h8M4 8h5M4 5h8" stroke="#fff" stroke-width="1.6" stroke-linecap="round"/></svg>
"""
