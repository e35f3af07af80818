// Web chat: posts the message to the router's web chat channel with the page's token and
// shows the server-sent events of the answer (typing, notes, the reply) as they arrive.
(function () {
  "use strict";
  var root = document.getElementById("chat");
  if (!root) return;
  var form = document.getElementById("chat-form");
  var input = document.getElementById("msg");
  var log = document.getElementById("log");
  var status = document.getElementById("chat-status");
  var d = root.dataset;

  function add(cls, text) {
    var li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
    return li;
  }

  function id() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  // One event block of a text/event-stream: its name and its data lines.
  function parse(block) {
    var ev = { name: "message", data: [] };
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) ev.name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) ev.data.push(line.slice(5).replace(/^ /, ""));
    });
    ev.data = ev.data.join("\n");
    return ev;
  }

  async function send(text) {
    add("you", text);
    status.textContent = d.typing;
    var resp;
    try {
      resp = await fetch("/api/v1/web/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + d.token },
        body: JSON.stringify({ id: id(), text: text })
      });
    } catch (e) {
      status.textContent = "";
      add("bot error", d.failed + " " + e.message);
      return;
    }
    if (!resp.ok) {
      var why = resp.statusText;
      try { why = (await resp.json()).error || why; } catch (e) { /* not JSON */ }
      status.textContent = "";
      add("bot error", d.failed + " " + why);
      return;
    }
    var reader = resp.body.getReader();
    var decoder = new TextDecoder();
    var buf = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buf += decoder.decode(chunk.value, { stream: true });
      var at;
      while ((at = buf.indexOf("\n\n")) >= 0) {
        var ev = parse(buf.slice(0, at));
        buf = buf.slice(at + 2);
        if (ev.name === "typing") status.textContent = d.typing;
        else if (ev.name === "note") add("bot note", ev.data);
        else if (ev.name === "reply") { status.textContent = ""; add("bot", ev.data); }
      }
    }
    status.textContent = "";
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  form.querySelector('button[type="submit"]').disabled = false;
})();
