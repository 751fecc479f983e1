// Fire-point alarm banner, shown on every page of a logged-in user.
//
// It follows /api/v1/alarms/live (server-sent events: the whole list of alarms nobody has
// acknowledged yet, again whenever it changes), shows them in #alarm-banner, and sounds a
// repeating alert tone made with WebAudio (no sound file) while any is not acknowledged.
// Operators acknowledge ("Đã biết"); viewers see the same banner and may only silence their
// own screen. A browser that blocks sound until a click gets a button to turn it on.
"use strict";
(function () {
  const banner = document.getElementById("alarm-banner");
  if (!banner || !window.EventSource || !window.loa) return;
  const h = loa.h;
  let S = null;            // the banner's words, in the user's language, and can_ack
  let alarms = [];
  let source = null;
  let retries = 0;
  const silenced = new Set();  // alarm ids silenced on this screen
  let error = "";

  const fmt = (message, values) =>
    message.replace(/%\((\w+)\)[sd]/g, (_, k) => (k in values ? String(values[k]) : ""));

  // --- the tone: two alternating pitches, half a second each, every 1.5 s -----------------------
  const tone = (function () {
    let ctx = null;
    let timer = null;
    function beep() {
      if (!ctx || ctx.state !== "running") return;
      const t = ctx.currentTime;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.setValueAtTime(960, t);
      osc.frequency.setValueAtTime(720, t + 0.25);
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.2, t + 0.02);
      gain.gain.setValueAtTime(0.2, t + 0.47);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.5);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t);
      osc.stop(t + 0.55);
    }
    function ensure() {
      if (!ctx) {
        const AC = window.AudioContext || window.webkitAudioContext;
        if (!AC) return null;
        ctx = new AC();
        ctx.onstatechange = () => render();
      }
      if (ctx.state === "suspended") ctx.resume().catch(() => {});
      return ctx;
    }
    return {
      start() {
        if (!ensure()) return;
        if (!timer) { beep(); timer = setInterval(beep, 1500); }
      },
      stop() { clearInterval(timer); timer = null; },
      on: () => timer !== null,
      // The browser keeps the sound off until the user has clicked or typed on the page.
      blocked: () => timer !== null && (!ctx || ctx.state !== "running"),
      resume() { if (ctx) ctx.resume().then(beep).catch(() => {}); },
    };
  })();
  for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(type, () => { if (tone.on()) tone.resume(); }, { capture: true });
  }

  // --- the banner --------------------------------------------------------------------------
  async function acknowledge(alarm, button) {
    button.disabled = true;
    try {
      await loa.api("POST", "/alarms/" + alarm.event_id + "/ack");
      error = "";
      alarms = alarms.filter((a) => a.event_id !== alarm.event_id);
    } catch (err) {
      error = fmt(S.ack_failed, { message: err.message });
      button.disabled = false;
    }
    render();
  }

  function item(alarm) {
    return h("li", { "data-event-id": alarm.event_id },
      h("strong", {}, alarm.what), " — ", alarm.device_name, " (", alarm.zone_name, ") · ",
      S.since, " ", loa.localTime(alarm.since),
      alarm.restored_at ? h("small", {}, " · ", S.restored) : null,
      S.can_ack ? h("button", { type: "button", class: "alarm-ack",
        onclick: (e) => acknowledge(alarm, e.currentTarget) }, S.ack) : null);
  }

  function render() {
    if (!S) return;
    const loud = alarms.filter((a) => !silenced.has(a.event_id));
    if (loud.length) tone.start(); else tone.stop();
    banner.dataset.tone = !tone.on() ? "off" : tone.blocked() ? "blocked" : "on";
    if (!alarms.length && !error) {
      banner.hidden = true;
      banner.replaceChildren();
      return;
    }
    const shown = alarms.slice(0, 3);
    // replaceChildren would write "null" for a part left out: filter them.
    banner.replaceChildren(...[
      h("p", { class: "alarm-title" }, h("strong", {}, S.title)),
      h("ul", { class: "alarm-list" }, shown.map(item)),
      alarms.length > shown.length ? h("p", {}, fmt(S.more, { n: alarms.length - shown.length })) : null,
      tone.blocked() ? h("button", { type: "button", onclick: () => { tone.resume(); } }, S.sound_on) : null,
      !S.can_ack && loud.length ? h("button", { type: "button", onclick: () => {
        for (const a of alarms) silenced.add(a.event_id);
        render();
      } }, S.mute) : null,
      error ? h("p", { role: "status" }, error) : null,
    ].filter(Boolean));
    banner.hidden = false;
  }

  // --- the stream, kept alive ------------------------------------------------------------------
  function connect() {
    source = loa.live("/api/v1/alarms/live", {
      alarms: (list) => {
        retries = 0;
        error = "";
        alarms = list;
        const ids = new Set(list.map((a) => a.event_id));
        for (const id of Array.from(silenced)) if (!ids.has(id)) silenced.delete(id);
        render();
      },
    }, (up) => {
      if (up) return;
      // CONNECTING: the browser reconnects by itself (the server ends every stream after a
      // while). CLOSED: it gave up (an error answer); try again, more slowly each time.
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        error = S.lost;
        render();
        setTimeout(connect, Math.min(60000, 2000 * 2 ** retries++));
      }
    });
  }

  async function start() {
    try {
      const resp = await fetch("/alarms/strings", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error(resp.statusText);
      S = await resp.json();
    } catch (err) {
      setTimeout(start, Math.min(60000, 2000 * 2 ** retries++));
      return;
    }
    connect();
  }
  start();
})();
