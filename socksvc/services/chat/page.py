"""
The chat page: one HTML document, its script and its style sheet, served
by the chat's web listener (L{socksvc.services.chat.web}).

No external asset, no inline script or style: the Content-Security-Policy
allows only these files from this origin, the WebSocket of this origin, and
Trusted Types for scripts (so nothing can be inserted as HTML: the script
sets C{textContent} only, and an C{innerHTML} assignment would throw). The
page works with the keyboard alone (a skip link, real buttons and forms, a
visible focus), names every control for screen readers (labels, landmarks,
the message list a live C{role="log"}), and fits a phone (one column below
44em). It reconnects by itself, and takes its nickname and room back.
"""

from __future__ import annotations

import re

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>socksvc chat</title>
<link rel="stylesheet" href="/chat.css">
<link rel="icon" href="/icon.svg" type="image/svg+xml">
<script src="/chat.js" defer></script>
</head>
<body>
<a class="skip" href="#say-text">Skip to the message box</a>
<header>
  <h1>socksvc chat</h1>
  <p id="status" role="status" aria-live="polite">Connecting&hellip;</p>
</header>
<section id="join" aria-labelledby="join-title">
  <h2 id="join-title">Choose a nickname</h2>
  <form id="nick-form">
    <label for="nick-input">Nickname (letters, digits, _ - .)</label>
    <input id="nick-input" name="nick" autocomplete="nickname" maxlength="64" required autofocus>
    <button type="submit">Enter the chat</button>
    <p id="nick-error" role="alert"></p>
  </form>
</section>
<div id="chat" hidden>
  <nav aria-labelledby="rooms-title">
    <h2 id="rooms-title">Rooms</h2>
    <ul id="rooms"></ul>
    <form id="room-form">
      <label for="room-input">Join or create a room</label>
      <input id="room-input" name="room" maxlength="32" autocomplete="off">
      <button type="submit">Join</button>
    </form>
  </nav>
  <main aria-labelledby="room-title">
    <h2 id="room-title">&nbsp;</h2>
    <p id="topic"></p>
    <ol id="log" role="log" aria-live="polite" aria-labelledby="room-title" tabindex="0"></ol>
    <form id="say-form">
      <label for="say-text" class="hidden-label">Message to the room (or /msg NICK TEXT, /me TEXT, /topic TEXT)</label>
      <input id="say-text" name="text" autocomplete="off" enterkeyhint="send"
        placeholder="Message (/msg NICK text for a private one)">
      <button type="submit">Send</button>
    </form>
  </main>
  <aside aria-labelledby="people-title">
    <h2 id="people-title">Here <span id="count"></span></h2>
    <p class="hint">Choose a name to write to that person privately.</p>
    <ul id="people"></ul>
    <button type="button" id="who-button" hidden>Show everyone here</button>
  </aside>
</div>
</body>
</html>
"""

CSS = """
:root { --fg: #1b1b1b; --bg: #fafafa; --muted: #5b5b5b; --line: #d0d0d0; --accent: #0b57d0; --warn: #a40000;
  --private: #6a1b9a; font-family: system-ui, sans-serif; color: var(--fg); background: var(--bg); }
@media (prefers-color-scheme: dark) { :root { --fg: #ececec; --bg: #171717; --muted: #b0b0b0; --line: #3a3a3a;
  --accent: #8ab4f8; --warn: #ff8a80; --private: #ce93d8; } }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: flex; flex-direction: column; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 0 1em; padding: .4em 1em;
  border-bottom: 1px solid var(--line); }
h1 { font-size: 1.2em; margin: 0; }
h2 { font-size: 1em; margin: .3em 0; }
#status { margin: 0; color: var(--muted); }
.skip { position: absolute; left: -999em; }
.skip:focus { left: 1em; top: .5em; background: var(--bg); padding: .3em; z-index: 2; }
.hidden-label { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
#join { max-width: 28em; margin: 2em auto; padding: 0 1em; }
#join label, #room-form label { display: block; margin-bottom: .3em; }
#room-form input { width: 100%; margin-bottom: .3em; }
#nick-error { color: var(--warn); min-height: 1.2em; }
input, button { font: inherit; padding: .45em .6em; border: 1px solid var(--line); border-radius: 4px;
  background: var(--bg); color: var(--fg); }
button { cursor: pointer; border-color: var(--accent); }
#chat { flex: 1; display: grid; grid-template-columns: 12em 1fr 12em; min-height: 0; }
nav, aside { padding: .5em 1em; overflow-y: auto; }
nav { border-right: 1px solid var(--line); }
aside { border-left: 1px solid var(--line); }
nav ul, aside ul { list-style: none; margin: 0 0 1em; padding: 0; }
nav li button, aside li button { width: 100%; text-align: left; border: none; background: none; padding: .3em;
  color: var(--fg); overflow-wrap: anywhere; }
nav li button[aria-current="true"] { font-weight: bold; background: var(--line); }
main { display: flex; flex-direction: column; min-width: 0; min-height: 0; padding: .5em 1em; }
#topic { margin: 0 0 .3em; color: var(--muted); overflow-wrap: anywhere; }
#log { flex: 1; list-style: none; margin: 0; padding: .3em; overflow-y: auto; min-height: 12em;
  border: 1px solid var(--line); border-radius: 4px; }
#log li { padding: .1em 0; overflow-wrap: anywhere; white-space: pre-wrap; }
#log .nick { font-weight: bold; }
#log .notice, #log .history { color: var(--muted); }
#log .error { color: var(--warn); }
#log .private { color: var(--private); }
#log time { color: var(--muted); font-size: .85em; margin-right: .4em; }
#say-form { display: flex; gap: .4em; margin-top: .5em; }
#say-text { flex: 1; min-width: 0; }
.hint { color: var(--muted); font-size: .85em; margin: 0 0 .4em; }
@media (max-width: 44em) {
  #chat { grid-template-columns: 1fr; grid-template-rows: auto 1fr auto; }
  nav, aside { border: none; max-height: 9em; }
  nav { order: 1; } main { order: 2; } aside { order: 3; }
}
"""

JS = r"""
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_LOG = 500;
  let ws = null, nick = "", room = "", wanted = localStorage.getItem("socksvc-nick") || "";
  let retry = 1000, quitting = false, registered = false, timers = [], roomSizes = [], live = true;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function status(text) { $("status").textContent = text; }
  function send(line) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(line); }
  function clock(t) {
    const d = t ? new Date(t * 1000) : new Date();
    return d.toTimeString().slice(0, 5);
  }
  function add(cls, parts, time) {
    const log = $("log");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const li = el("li", undefined, cls);
    const stamp = el("time", clock(time));
    li.append(stamp);
    for (const p of parts) li.append(typeof p === "string" ? document.createTextNode(p) : p);
    log.append(li);
    while (log.children.length > MAX_LOG) log.firstElementChild.remove();
    if (atEnd) log.scrollTop = log.scrollHeight;
  }
  function said(ev, cls) {
    if (ev.kind === "action") add(cls, ["* ", el("span", ev.nick, "nick"), " " + ev.text], ev.time);
    else add(cls, [el("span", ev.nick, "nick"), ": " + ev.text], ev.time);
  }
  function people(list, size) {
    const ul = $("people");
    ul.replaceChildren();
    for (const n of list) {
      const b = el("button", n);
      b.type = "button";
      b.setAttribute("aria-label", n === nick ? n + " (you)" : "Write privately to " + n);
      b.addEventListener("click", () => { const t = $("say-text"); t.value = "/msg " + n + " "; t.focus(); });
      const li = el("li"); li.append(b); ul.append(li);
    }
    const here = size === undefined ? list.length : size;
    $("count").textContent = "(" + here + ")";
    if (roomSizes.some(([name, n]) => name === room && n !== here)) {
      rooms(roomSizes.map(([name, n]) => [name, name === room ? here : n]));
    }
  }
  function roster() { return Array.from($("people").querySelectorAll("button"), (b) => b.textContent); }
  function rooms(list) {
    roomSizes = list;
    const ul = $("rooms");
    ul.replaceChildren();
    for (const [name, size] of list) {
      const b = el("button", name + " (" + size + ")");
      b.type = "button";
      if (name === room) b.setAttribute("aria-current", "true");
      b.setAttribute("aria-label", "Room " + name + ", " + size + (size === 1 ? " person" : " people"));
      b.addEventListener("click", () => send("/join " + name));
      const li = el("li"); li.append(b); ul.append(li);
    }
  }
  const handlers = {
    notice: (ev) => add("notice", [ev.text]),
    error: (ev) => {
      if (!registered) {
        $("nick-error").textContent = ev.text;
        if (ev.code === "nick_taken" && wanted && retry > 0) {
          status("Your nickname is still taken (the old connection may be closing); trying again soon.");
          timers.push(setTimeout(() => send(wanted), 5000));
        }
      } else add("error", [ev.text]);
    },
    you: (ev) => {
      nick = ev.nick; registered = true; wanted = nick;
      localStorage.setItem("socksvc-nick", nick);
      $("join").hidden = true; $("chat").hidden = false;
      status("Connected as " + nick);
      $("say-text").focus();
    },
    room: (ev) => {
      room = ev.room;
      sessionStorage.setItem("socksvc-room", room);
      $("room-title").textContent = room;
      $("topic").textContent = ev.topic ? "Topic: " + ev.topic : "";
      $("log").replaceChildren();
      for (const h of ev.history) said(h, "history");
      add("notice", ["You are in " + room + " (" + ev.size + (ev.size === 1 ? " person)" : " people)")]);
      live = ev.live !== false;  // a big room announces no joins: its list is asked for, not kept
      $("who-button").hidden = live;
      people(ev.members, ev.size);
      send("/rooms");
    },
    say: (ev) => said(ev, ev.kind === "notice" ? "notice" : ""),
    join: (ev) => { add("notice", [ev.nick + " joined"]); if (live) people([...roster(), ev.nick].sort()); },
    part: (ev) => {
      if (ev.nick === nick) return;
      add("notice", [ev.nick + " left" + (ev.reason ? " (" + ev.reason + ")" : "")]);
      people(roster().filter((n) => n !== ev.nick));
    },
    quit: (ev) => {
      add("notice", [ev.nick + " left the chat" + (ev.reason ? " (" + ev.reason + ")" : "")]);
      people(roster().filter((n) => n !== ev.nick));
    },
    nick: (ev) => {
      add("notice", [ev.old + " is now " + ev.new]);
      people(roster().map((n) => (n === ev.old ? ev.new : n)).sort());
    },
    topic: (ev) => {
      $("topic").textContent = ev.text ? "Topic: " + ev.text : "";
      if (ev.nick) add("notice", [ev.nick + (ev.text ? " set the topic: " + ev.text : " cleared the topic")]);
      else add("notice", [ev.text ? "Topic: " + ev.text : "No topic is set"]);
    },
    private: (ev) => add("private", [el("span", ev.from, "nick"), " to you (private): " + ev.text]),
    sent: (ev) => add("private", ["You to ", el("span", ev.to, "nick"), " (private): " + ev.text]),
    who: (ev) => { if (ev.room === room) people(ev.members, ev.size); },
    rooms: (ev) => rooms(ev.rooms),
    bye: (ev) => { status(ev.text); add("notice", [ev.text]); },
    missed: (ev) => add("notice", ["You missed " + ev.lines + " lines (the connection was too slow)"]),
  };
  function connect() {
    status(registered || wanted ? "Connecting…" : "Connected: choose a nickname");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/ws");
    ws.addEventListener("open", () => {
      retry = 1000;
      status("Connected");
      if (registered && wanted) { sessionStorage.setItem("socksvc-rejoin", "1"); send(wanted); }
      registered = false;
    });
    ws.addEventListener("message", (e) => {
      for (const line of String(e.data).split("\n")) {
        if (!line) continue;
        let ev;
        try { ev = JSON.parse(line); } catch { continue; }
        const h = handlers[ev.t];
        if (h) h(ev);
        if (ev.t === "you" && sessionStorage.getItem("socksvc-rejoin") === "1") {
          sessionStorage.removeItem("socksvc-rejoin");
          const back = sessionStorage.getItem("socksvc-room");
          if (back) send("/join " + back);
        }
      }
    });
    ws.addEventListener("close", () => {
      if (quitting) { status("You left the chat. Reload the page to come back."); return; }
      status("Disconnected; reconnecting in " + Math.round(retry / 1000) + " s");
      timers.push(setTimeout(connect, retry));
      retry = Math.min(retry * 2, 30000);
    });
  }
  $("nick-form").addEventListener("submit", (e) => {
    e.preventDefault();
    wanted = $("nick-input").value.trim();
    $("nick-error").textContent = "";
    if (wanted) send(wanted);
  });
  $("say-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const box = $("say-text"), text = box.value;
    if (!text.trim()) return;
    if (/^\/quit\b/i.test(text)) quitting = true;
    send(text);
    if (!text.startsWith("/") || text.startsWith("//")) said({ nick: nick, text: text.replace(/^\/\//, "/") }, "mine");
    else if (/^\/me /i.test(text)) said({ nick: nick, text: text.slice(4), kind: "action" }, "mine");
    box.value = "";
  });
  $("room-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("room-input").value.trim();
    if (name) send("/join " + name);
    $("room-input").value = "";
  });
  $("nick-input").value = wanted;
  $("nick-input").select();  // the last nickname is offered; typing replaces it
  $("who-button").addEventListener("click", () => send("/who"));
  setInterval(() => { if (registered) { if (live) send("/who"); send("/rooms"); } }, 60000);
  connect();
})();
"""

ICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">\
<path d="M2 2h12v9H7l-3 3v-3H2z" fill="#0b57d0"/></svg>
"""

FILES: dict[str, tuple[str, bytes]] = {
    "/": ("text/html; charset=utf-8", HTML.encode()),
    "/chat.js": ("text/javascript; charset=utf-8", JS.encode()),
    "/chat.css": ("text/css; charset=utf-8", CSS.encode()),
    "/icon.svg": ("image/svg+xml", ICON.encode()),
    "/favicon.ico": ("image/svg+xml", ICON.encode()),
}
"""What the web listener serves besides the WebSocket: path -> (content type, body)."""

_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def clean_host(value: str) -> str:
    """A Host header that is a plain host[:port] (a name, an IPv4 or a bracketed IPv6 address), else ""."""
    return value if _HOST.fullmatch(value) else ""


def headers(host: str) -> list[tuple[str, str]]:
    """The security headers of every file of the page (C{host}: the request's Host, checked, or "")."""
    sockets = f" ws://{host} wss://{host}" if host else ""
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
        "require-trusted-types-for 'script'; trusted-types 'none'"
    )
    return [
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Cache-Control", "no-cache"),
    ]
