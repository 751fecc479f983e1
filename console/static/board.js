// The live board: counters, filters and a page of devices from /api/v1/devices, kept up to
// date without reloading by the server-sent events of /api/v1/devices/live. The filters
// live in the address (?zone=&problem=&q=&page=) so a reload or a shared link keeps them.
// DOM is built with loa.h (text only, never HTML); the words come from #board-config.
"use strict";
(function () {
  const configEl = document.getElementById("board-config");
  if (!configEl) return;
  const { texts: T, lang } = JSON.parse(configEl.textContent);
  const { api, h, live, localTime } = window.loa;
  const $ = (id) => document.getElementById(id);
  const fmt = (text, vars) =>
    text.replace(/%\((\w+)\)[sd]/g, (m, k) => (vars && k in vars ? String(vars[k]) : m));
  const LIMIT = 50;
  const REFETCH_MS = 1500;

  const els = {
    zone: $("f-zone"), problem: $("f-problem"), q: $("f-q"), rows: $("board-rows"),
    prev: $("page-prev"), next: $("page-next"), info: $("page-info"), state: $("live-state"),
    error: $("board-error"),
  };
  const params = new URLSearchParams(location.search);
  const state = {
    zone: params.get("zone") || "",
    problem: params.get("problem") || "",
    q: params.get("q") || "",
    page: Math.max(1, parseInt(params.get("page") || "1", 10) || 1),
    total: 0,
    zones: new Map(), // id -> {name, kind}
    shown: new Map(), // device id -> its <tr>
    source: null,
    refetchTimer: null,
    request: 0,
  };

  // --- words ------------------------------------------------------------------------------

  const relative = new Intl.RelativeTimeFormat(lang === "en" ? "en" : "vi", { numeric: "auto" });
  function ago(iso) {
    const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
    const steps = [[60, "second"], [60, "minute"], [24, "hour"], [Infinity, "day"]];
    let value = seconds;
    for (const [size, unit] of steps) {
      if (Math.abs(value) < size) return relative.format(value, unit);
      value = Math.round(value / size);
    }
    return relative.format(value, "day");
  }
  const signalName = (code) => T.signals[code] || code;
  const dash = () => h("span", { class: "muted" }, "–");

  // --- one device as a table row (a card on a phone) ---------------------------------------

  function cell(column, cls, ...children) {
    return h("td", { class: cls, "data-label": T.columns[column] }, ...children);
  }

  function connectionCell(d) {
    if (d.online) return cell("connection", "", h("span", { class: "tag ok" }, T.online));
    const when = d.last_seen_at
      ? h("small", { class: "seen", "data-at": d.last_seen_at, title: localTime(d.last_seen_at) },
          ago(d.last_seen_at))
      : h("small", {}, T.never_seen);
    return cell("connection", "", h("span", { class: "tag bad" }, T.offline), " ", when);
  }

  function playingCell(d) {
    if (!d.playing) return cell("playing", "", dash());
    const emergency = d.playing.priority === "emergency"
      ? h("span", { class: "tag alarm" }, T.emergency) : null;
    return cell("playing", "", emergency, emergency ? " " : null,
      h("span", { title: d.playing.command_id }, d.playing.title || d.playing.command_id));
  }

  function faultsCell(d) {
    if (!d.faults.length) return cell("faults", "", h("span", { class: "muted" }, T.none));
    return cell("faults", "", d.faults.map((f) =>
      h("span", { class: "tag " + (f.class === "trouble" ? "bad" : "warn") }, signalName(f.signal))));
  }

  function fireCell(d) {
    if (!d.fire_state) return cell("fire_point", "", dash());
    const cls = { normal: "ok", alarm: "alarm", supervisory: "warn", trouble: "bad" }[d.fire_state];
    const alarms = d.fire_alarm && d.state && d.state.fire_point
      ? d.state.fire_point.signals.filter((s) => s.signal_class === "alarm").map((s) => signalName(s.signal))
      : [];
    return cell("fire_point", "", h("span", { class: "tag " + cls }, T.fire_states[d.fire_state] || d.fire_state),
      alarms.length ? h("small", {}, alarms.join(", ")) : null);
  }

  function row(d) {
    const zone = state.zones.get(d.zone_id);
    const amp = d.amplifier_on === true ? T.amp_on : d.amplifier_on === false ? T.amp_off : null;
    return h("tr", { "data-id": d.id, class: d.fire_alarm ? "alarm" : null },
      h("td", { class: "device", "data-label": T.columns.device },
        h("div", {}, h("strong", {}, d.name), h("small", {}, d.id))),
      cell("zone", "", zone ? zone.name : d.zone_id),
      connectionCell(d),
      playingCell(d),
      cell("volume", "", d.volume_pct === null || d.volume_pct === undefined ? dash() : d.volume_pct + "%"),
      cell("amplifier", "", amp || dash()),
      faultsCell(d),
      fireCell(d));
  }

  // --- the page of devices -----------------------------------------------------------------

  function query(extra) {
    const q = new URLSearchParams();
    if (state.zone) q.set("zone", state.zone);
    if (state.problem) q.set("problem", state.problem);
    if (state.q) q.set("q", state.q);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q.toString();
  }

  function remember() {
    const q = new URLSearchParams(query());
    if (state.page > 1) q.set("page", state.page);
    const text = q.toString();
    history.replaceState(null, "", text ? "?" + text : location.pathname);
  }

  function showCounters(s) {
    for (const key of ["total", "online", "offline", "fault", "fire_alarm", "playing"]) {
      $("count-" + key).textContent = String(s[key]);
    }
    document.querySelector(".counter.alarm").classList.toggle("active", s.fire_alarm > 0);
  }

  function showPager() {
    const pages = Math.max(1, Math.ceil(state.total / LIMIT));
    els.info.textContent = fmt(T.page, { page: state.page, pages, total: state.total });
    els.prev.disabled = state.page <= 1;
    els.next.disabled = state.page >= pages;
  }

  function showRows(items) {
    state.shown.clear();
    if (!items.length) {
      els.rows.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: "8" }, T.no_devices)));
      return;
    }
    els.rows.replaceChildren(...items.map((d) => {
      const tr = row(d);
      state.shown.set(d.id, tr);
      return tr;
    }));
  }

  function markFilters() {
    els.zone.value = state.zone;
    els.problem.value = state.problem;
    els.q.value = state.q;
    for (const b of document.querySelectorAll("#counters button[data-problem]")) {
      b.setAttribute("aria-pressed", String(b.dataset.problem === state.problem));
    }
  }

  // Loads the current page; `reconnect`: the filter changed, so the live stream follows.
  async function load(reconnect) {
    const mine = ++state.request;
    clearTimeout(state.refetchTimer);
    state.refetchTimer = null;
    remember();
    markFilters();
    let body;
    try {
      body = await api("GET", "/devices?" + query({ limit: LIMIT, offset: (state.page - 1) * LIMIT }));
    } catch (err) {
      if (mine !== state.request) return;
      els.error.textContent = fmt(T.load_failed, { error: err.message });
      els.error.hidden = false;
      return;
    }
    if (mine !== state.request) return; // a newer filter won
    els.error.hidden = true;
    const pages = Math.max(1, Math.ceil(body.total / LIMIT));
    if (state.page > pages) {
      state.page = pages;
      return load(reconnect);
    }
    state.total = body.total;
    showRows(body.items);
    showCounters(body.summary);
    showPager();
    if (reconnect || !state.source) connect(body.cursor);
  }

  // A device entered or left the filter, or the total moved: load the page again, once.
  function refetchSoon() {
    if (state.refetchTimer) return;
    state.refetchTimer = setTimeout(() => load(false), REFETCH_MS);
  }

  // --- live updates --------------------------------------------------------------------------

  function setLive(status) {
    els.state.dataset.state = status;
    els.state.textContent = status === "live" ? T.live : status === "lost" ? T.reconnecting : T.connecting;
  }

  function onDevices(data) {
    for (const d of data.items) {
      const old = state.shown.get(d.id);
      if (old) {
        const tr = row(d);
        tr.classList.add("flash");
        old.replaceWith(tr);
        state.shown.set(d.id, tr);
      } else if (state.problem) {
        refetchSoon(); // it now has the problem shown: it may belong on this page
      }
    }
    if (data.left.some((id) => state.shown.has(id))) refetchSoon();
  }

  function onSummary(s) {
    showCounters(s);
    if (s.matching !== state.total) refetchSoon();
  }

  function connect(cursor) {
    if (state.source) state.source.close();
    setLive("connecting");
    state.source = live("/api/v1/devices/live?" + query({ since: cursor }),
      { devices: onDevices, summary: onSummary, overflow: refetchSoon },
      (ok) => setLive(ok ? "live" : "lost"));
  }

  // --- zones and filters ----------------------------------------------------------------------

  async function loadZones() {
    const tree = await api("GET", "/zones/tree");
    const options = [h("option", { value: "" }, els.zone.options[0].textContent)];
    const walk = (nodes, depth) => {
      for (const z of nodes) {
        state.zones.set(z.id, z);
        options.push(h("option", { value: z.id },
          "\u00a0\u00a0".repeat(depth) + (depth ? "– " : "") + z.name + " (" + z.devices_total + ")"));
        walk(z.children, depth + 1);
      }
    };
    walk(tree, 0);
    els.zone.replaceChildren(...options);
    if (state.zone && !state.zones.has(state.zone)) state.zone = "";
  }

  function filterChanged() {
    state.zone = els.zone.value;
    state.problem = els.problem.value;
    state.q = els.q.value.trim();
    state.page = 1;
    load(true);
  }

  let typing = null;
  els.zone.addEventListener("change", filterChanged);
  els.problem.addEventListener("change", filterChanged);
  els.q.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(filterChanged, 300);
  });
  $("board-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(typing);
    filterChanged();
  });
  for (const b of document.querySelectorAll("#counters button[data-problem]")) {
    b.addEventListener("click", () => {
      els.problem.value = b.dataset.problem === state.problem ? "" : b.dataset.problem;
      filterChanged();
    });
  }
  els.prev.addEventListener("click", () => { state.page -= 1; load(false); });
  els.next.addEventListener("click", () => { state.page += 1; load(false); });
  // "3 minutes ago" keeps counting.
  setInterval(() => {
    for (const el of els.rows.querySelectorAll("small.seen")) el.textContent = ago(el.dataset.at);
  }, 30000);

  loadZones()
    .catch((err) => {
      els.error.textContent = fmt(T.load_failed, { error: err.message });
      els.error.hidden = false;
    })
    .then(() => load(true));
})();
