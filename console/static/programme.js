// The programme page: a zone's week, the commune's schedules (create, edit, turn on/off,
// delete), play now with its delivery and STOP, quiet hours and holidays. Everything comes
// from /api/v1; the page's words come translated in #programme-config. DOM is built with
// loa.h (text only, never HTML).
"use strict";
(function () {
  const configEl = document.getElementById("programme-config");
  const zoneSelect = document.getElementById("zone");
  if (!configEl || !zoneSelect) return;
  const cfg = JSON.parse(configEl.textContent);
  const T = cfg.texts;
  const { api, h } = window.loa;
  const $ = (id) => document.getElementById(id);
  const fmt = (text, vars) =>
    text.replace(/%\((\w+)\)s/g, (m, k) => (vars && k in vars ? String(vars[k]) : m));
  const WEEKDAYS = T.weekdays.split("|");
  const NTH = T.nth.split("|");
  const NTH_LAST = T.nth_last.split("|");
  const STATUSES = ["pending", "received", "started", "finished", "failed", "preempted", "stopped"];
  const FINAL = new Set(["finished", "failed", "preempted", "stopped"]);
  const zonesById = new Map(cfg.zones.map((z) => [z.id, z]));
  const state = {
    zone: cfg.selected,
    weekOffset: 0,
    programme: null,
    schedules: [],
    audio: null,
    editing: null,
    exceptions: [],
    conflictName: "",
    quietSpan: "",
    playing: null,
  };

  // --- dates and times (site-local wall clock, as the API gives and takes them) ----------

  const pad = (n) => String(n).padStart(2, "0");
  function siteLocal(when) {
    const parts = {};
    const f = new Intl.DateTimeFormat("en-GB", {
      timeZone: cfg.timezone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    });
    for (const p of f.formatToParts(when)) parts[p.type] = p.value;
    return { date: `${parts.year}-${parts.month}-${parts.day}`,
             time: `${parts.hour}:${parts.minute}`, seconds: parts.second };
  }
  const todayISO = () => siteLocal(new Date()).date;
  function utcDate(iso) {
    const [y, m, d] = iso.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, d));
  }
  function addDays(iso, n) {
    const d = utcDate(iso);
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  const weekdayOf = (iso) => (utcDate(iso).getUTCDay() + 6) % 7; // 0 = Monday
  const dm = (iso) => `${iso.slice(8, 10)}/${iso.slice(5, 7)}`;
  const dmy = (iso) => `${dm(iso)}/${iso.slice(0, 4)}`;
  const hm = (t) => String(t).slice(0, 5);
  // "2026-01-06T07:00:00+07:00" (the API's site-local times) -> its date, time and weekday.
  const localParts = (local) => ({ date: local.slice(0, 10), time: local.slice(11, 16) });
  const dayName = (iso) => `${WEEKDAYS[weekdayOf(iso)]} ${dmy(iso)}`;
  function onceLocal(at) {
    if (/([zZ]|[+-]\d\d:?\d\d)$/.test(at)) return siteLocal(new Date(at));
    return { date: at.slice(0, 10), time: at.slice(11, 16) };
  }
  const mmss = (ms) => `${Math.floor(ms / 60000)}:${pad(Math.round((ms % 60000) / 1000) % 60)}`;

  // --- zones -------------------------------------------------------------------------------

  const zoneName = (id) => (zonesById.has(id) ? zonesById.get(id).name : id);
  const communeOf = (id) => (zonesById.has(id) ? zonesById.get(id).commune_id : null);
  const currentCommune = () => communeOf(state.zone);
  const inCommune = (commune) => cfg.zones.filter((z) => z.commune_id === commune);
  function descendants(id) {
    const out = [];
    for (const z of cfg.zones) {
      for (let p = z.parent_id; p; p = zonesById.has(p) ? zonesById.get(p).parent_id : null) {
        if (p === id) { out.push(z.id); break; }
      }
    }
    return out;
  }

  // Checkboxes for the commune's zones, each indented under its parent; checking a zone
  // covers (and disables) the zones below it.
  function zoneChecklist(fieldset, prefix, commune, checked) {
    const legend = fieldset.querySelector("legend");
    fieldset.replaceChildren(legend);
    const boxes = new Map();
    for (const z of inCommune(commune)) {
      const box = h("input", { type: "checkbox", id: prefix + z.id, value: z.id });
      box.checked = checked.includes(z.id);
      boxes.set(z.id, box);
      const label = z.depth === 0 ? `${z.name} — ${T.whole_commune}` : z.name;
      fieldset.append(h("label", { class: "inline", for: prefix + z.id,
                                   style: `padding-left: ${z.depth * 1.5}rem` }, box, " ", label));
    }
    // A covered zone is shown checked and disabled; only the covering one is sent.
    const sync = () => {
      for (const b of boxes.values()) {
        if (b.dataset.covered) { b.checked = false; delete b.dataset.covered; }
        b.disabled = false;
      }
      for (const [id, b] of boxes) {
        if (!b.checked || b.disabled) continue;
        for (const d of descendants(id)) {
          const child = boxes.get(d);
          if (child) { child.disabled = true; child.checked = true; child.dataset.covered = "1"; }
        }
      }
    };
    for (const b of boxes.values()) b.addEventListener("change", sync);
    sync();
  }
  const checkedZones = (fieldset) =>
    [...fieldset.querySelectorAll("input[type=checkbox]")].filter((b) => b.checked && !b.disabled)
      .map((b) => b.value);

  // --- messages ----------------------------------------------------------------------------

  function say(el, message, kind) {
    el.textContent = message || "";
    el.className = message ? `form-status flash ${kind || "ok"}` : "form-status";
  }
  const apiError = (e) => (e && e.data && e.data.error) || null;
  const quotedName = (text) => { const m = /“([^”]*)”/.exec(text || ""); return m ? m[1] : ""; };
  const spanIn = (text) => {
    const m = /\((\d\d:\d\d(?::\d\d)?–\d\d:\d\d(?::\d\d)?)\)/.exec(text || "");
    return m ? m[1] : state.quietSpan;
  };

  // The API's refusal of a schedule (or a preview warning) in the user's words.
  function explain(err, fallback) {
    if (!err) return fallback;
    if (err.code === "quiet_hours") {
      const span = spanIn(err.message);
      if (err.field === "on_conflict") {
        return fmt(T.quiet_queue, { name: quotedName(err.message), span });
      }
      if (/would end at/.test(err.message)) {
        return fmt(T.quiet_runs_into, { span, time: err.local_time });
      }
      return fmt(T.quiet_at, { span, time: err.local_time });
    }
    if (err.code === "conflict" && !err.conflicts) return T.own_overlap;
    return fmt(T.not_saved, { message: err.message });
  }

  // --- the week ----------------------------------------------------------------------------

  async function loadProgramme() {
    const box = $("week");
    box.replaceChildren(h("p", { class: "muted" }, T.loading));
    try {
      state.programme = await api("GET",
        `/zones/${encodeURIComponent(state.zone)}/programme?days=${cfg.days}`);
    } catch (e) {
      state.programme = null;
      box.replaceChildren(h("p", { class: "error", role: "alert" },
                            fmt(T.load_failed, { message: e.message })));
      return;
    }
    renderWeek();
  }

  function firingItem(item) {
    const { time } = localParts(item.local);
    const priority = item.bulletin_level === "priority";
    const parts = [
      h("b", { class: "time" }, time), h("span", { class: "name" }, item.name), " ",
      h("span", { class: priority ? "tag priority" : "tag" },
        priority ? T.level_priority : T.level_normal),
    ];
    if (item.reach === "part") {
      parts.push(h("small", {}, fmt(T.part_reach, { zones: item.zone_ids.map(zoneName).join(", ") })));
    }
    const title = `${time} ${item.name} — ${item.audio_name}`;
    if (!cfg.can_edit) return h("li", {}, h("div", { class: "firing", title }, parts));
    return h("li", {}, h("button", {
      type: "button", class: "firing", title, "data-schedule": item.schedule_id,
      onclick: () => openEditor(item.schedule_id),
    }, parts));
  }

  function renderWeek() {
    const today = todayISO();
    const monday = addDays(today, 7 * state.weekOffset - weekdayOf(today));
    const sunday = addDays(monday, 6);
    $("week-label").textContent = fmt(T.week_of, { start: dm(monday), end: dmy(sunday) });
    $("week-prev").disabled = state.weekOffset <= 0;
    $("week-this").disabled = state.weekOffset === 0;
    $("week-next").disabled = addDays(sunday, 1) > addDays(today, cfg.days);
    const p = state.programme;
    if (!p) return;
    const byDay = new Map();
    for (const item of p.items) {
      const day = item.local.slice(0, 10);
      if (!byDay.has(day)) byDay.set(day, []);
      byDay.get(day).push(item);
    }
    const holidays = new Map(p.holidays.map((x) => [x.date, x.name]));
    let any = false;
    const days = [];
    for (let i = 0; i < 7; i++) {
      const day = addDays(monday, i);
      const items = byDay.get(day) || [];
      any = any || items.length > 0;
      const classes = ["day"];
      if (day === today) classes.push("today");
      if (day < today) classes.push("past");
      days.push(h("section", { class: classes.join(" "), "data-date": day },
        h("h3", {}, `${WEEKDAYS[i]} `, h("span", { class: "date" }, dm(day)),
          day === today ? [" ", h("span", { class: "tag ok" }, T.today)] : null),
        holidays.has(day) ? h("p", { class: "holiday" }, fmt(T.holiday, { name: holidays.get(day) })) : null,
        items.length ? h("ul", { class: "firings" }, items.map(firingItem))
          : h("p", { class: "muted empty" }, day < today ? T.past_day : T.nothing_day)));
    }
    $("week").replaceChildren(...days);
    $("week-empty").hidden = any;
    $("week-empty").textContent = T.nothing_week;
    $("week-truncated").hidden = !p.truncated;
    $("week-truncated").textContent = fmt(T.truncated, { n: p.items.length });
  }

  // --- schedules of the commune ------------------------------------------------------------

  function describeRule(r) {
    if (r.kind === "once") {
      const { date, time } = onceLocal(String(r.at));
      return fmt(T.once, { date: dmy(date), time });
    }
    const n = r.interval || 1;
    let head;
    if (r.frequency === "daily") head = n === 1 ? T.daily : fmt(T.daily_n, { n });
    else if (r.frequency === "weekly") {
      const days = (r.weekdays || []).map((d) => WEEKDAYS[d]).join(", ");
      head = fmt(n === 1 ? T.weekly : T.weekly_n, { n, days });
    } else if (r.month_weekday) {
      const [weekday, nth] = r.month_weekday;
      head = fmt(n === 1 ? T.monthly_weekday : T.monthly_weekday_n,
                 { n, weekday: WEEKDAYS[weekday], nth: nth > 0 ? NTH[nth - 1] : NTH_LAST[-nth - 1] });
    } else head = fmt(n === 1 ? T.monthly_day : T.monthly_day_n, { n, day: r.month_day });
    const parts = [`${head} ${fmt(T.at_times, { times: r.times.map(hm).join(", ") })}`,
      r.end_date ? fmt(T.from_to, { start: dmy(r.start_date), end: dmy(r.end_date) })
        : fmt(T.from_date, { start: dmy(r.start_date) })];
    if (r.exceptions && r.exceptions.length) parts.push(fmt(T.except_days, { n: r.exceptions.length }));
    return parts.join("; ");
  }

  async function loadSchedules() {
    try {
      state.schedules = await api("GET", "/schedules");
    } catch (e) {
      $("schedules").replaceChildren(h("p", { class: "error", role: "alert" },
                                       fmt(T.load_failed, { message: e.message })));
      return;
    }
    renderSchedules();
  }

  function renderSchedules() {
    const commune = currentCommune();
    const mine = state.schedules.filter((s) => communeOf(s.zone_ids[0]) === commune);
    if (!mine.length) {
      $("schedules").replaceChildren(h("p", { class: "muted" }, T.no_schedules));
      return;
    }
    $("schedules").replaceChildren(h("ul", { class: "schedules" }, mine.map((s) => {
      const priority = s.bulletin_level === "priority";
      const actions = cfg.can_edit ? h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => openEditor(s.id) }, T.edit),
        h("button", { type: "button", class: "secondary", onclick: () => toggleSchedule(s) },
          s.enabled ? T.turn_off : T.turn_on),
        h("button", { type: "button", class: "danger", onclick: () => deleteSchedule(s) }, T.delete),
      ) : null;
      return h("li", { "data-schedule": s.id },
        h("h3", {}, s.name, " ",
          h("span", { class: s.enabled ? "tag ok" : "tag off" }, s.enabled ? T.enabled : T.disabled), " ",
          h("span", { class: priority ? "tag priority" : "tag" }, priority ? T.level_priority : T.level_normal),
          s.on_conflict === "queue_after" ? [" ", h("span", { class: "tag" }, T.queue_after_tag)] : null),
        h("p", {}, describeRule(s.rule)),
        h("p", { class: "muted" }, s.zone_ids.map(zoneName).join(", ")),
        actions);
    })));
  }

  const bodyOf = (s) => ({
    name: s.name, audio_sha256: s.audio_sha256, rule: s.rule, zone_ids: s.zone_ids,
    bulletin_level: s.bulletin_level, volume_pct: s.volume_pct, gong: s.gong,
    enabled: s.enabled, on_conflict: s.on_conflict,
  });

  async function toggleSchedule(s) {
    const status = $("schedules-status");
    try {
      const saved = await api("PUT", `/schedules/${s.id}`, { ...bodyOf(s), enabled: !s.enabled });
      say(status, fmt(saved.enabled ? T.turned_on : T.turned_off, { name: saved.name }));
    } catch (e) {
      // Turning it on can clash with the programme as it is now: show why, with the choices.
      if (!s.enabled && (e.status === 409 || e.status === 422)) {
        await openEditor(s.id, { enabled: true, error: e });
        return;
      }
      say(status, fmt(T.not_saved, { message: e.message }), "error");
      return;
    }
    refresh();
  }

  async function deleteSchedule(s) {
    if (!window.confirm(fmt(T.confirm_delete, { name: s.name }))) return;
    const status = $("schedules-status");
    try {
      const kept = await api("DELETE", `/schedules/${s.id}`);
      say(status, fmt(kept ? T.disabled_instead : T.deleted, { name: s.name }));
    } catch (e) {
      say(status, fmt(T.not_saved, { message: e.message }), "error");
    }
    refresh();
  }

  function refresh() {
    loadProgramme();
    loadSchedules();
  }

  // --- the schedule form -------------------------------------------------------------------

  class FormError extends Error {
    constructor(message, field) { super(message); this.field = field; }
  }
  const fail = (message, field) => { throw new FormError(message, field); };

  async function loadAudio() {
    if (state.audio) return state.audio;
    state.audio = await api("GET", "/audio");
    return state.audio;
  }

  function fillAudio(select, listen, chosen) {
    const options = [h("option", { value: "" }, T.choose_audio)];
    const list = state.audio || [];
    if (chosen && !list.some((a) => a.sha256 === chosen)) options.push(h("option", { value: chosen }, chosen.slice(0, 12)));
    for (const a of list) options.push(h("option", { value: a.sha256 }, `${a.name} (${mmss(a.duration_ms)})`));
    select.replaceChildren(...options);
    select.value = chosen || "";
    const sync = () => {
      listen.hidden = !select.value;
      if (select.value) listen.src = `/api/v1/audio/${select.value}/file`;
      else listen.removeAttribute("src");
    };
    select.onchange = sync;
    sync();
    const note = $(`${select.id}-none`);
    if (note) note.remove();
    if (!list.length) select.after(h("p", { class: "warn", id: `${select.id}-none` }, T.no_audio));
  }

  function timeRow(value) {
    const input = h("input", { type: "time", "aria-label": T.time_of_day });
    input.value = value || "";
    const row = h("div", { class: "time-row" }, input);
    row.append(h("button", { type: "button", class: "secondary",
      "aria-label": fmt(T.remove_time, { time: value || "" }),
      onclick: () => { row.remove(); } }, "×"));
    input.addEventListener("change", () => {
      row.lastChild.setAttribute("aria-label", fmt(T.remove_time, { time: input.value }));
    });
    return row;
  }

  function renderExceptions() {
    $("s-exceptions").replaceChildren(...state.exceptions.map((d) => h("div", { class: "exc-row" },
      h("span", {}, dayName(d)),
      h("button", { type: "button", class: "secondary", "aria-label": fmt(T.remove_exception, { date: dmy(d) }),
        onclick: () => { state.exceptions = state.exceptions.filter((x) => x !== d); renderExceptions(); } }, "×"))));
  }

  function showKind() {
    const kind = $("s-kind").value;
    const once = kind === "once";
    document.querySelector('[data-kind="once"]').hidden = !once;
    document.querySelector('[data-kind="recurring"]').hidden = once;
    document.querySelector('[data-freq="weekly"]').hidden = kind !== "weekly";
    document.querySelector('[data-freq="monthly"]').hidden = kind !== "monthly";
    $("s-interval-unit").textContent = { daily: T.unit_days, weekly: T.unit_weeks, monthly: T.unit_months }[kind] || "";
    const byDay = $("s-month-by-day").checked;
    document.querySelector('[data-month="day"]').hidden = !byDay;
    document.querySelector('[data-month="weekday"]').hidden = byDay;
  }

  function fillForm(s) {
    const today = todayISO();
    const tomorrow = addDays(today, 1);
    $("schedule-title").textContent = s ? T.edit_schedule : T.new_schedule;
    $("s-name").value = s ? s.name : "";
    fillAudio($("s-audio"), $("s-listen"), s ? s.audio_sha256 : "");
    const commune = s ? communeOf(s.zone_ids[0]) || currentCommune() : currentCommune();
    zoneChecklist($("s-zones"), "s-zone-", commune, s ? s.zone_ids : [state.zone]);
    const r = s ? s.rule : { kind: "recurring", frequency: "daily", interval: 1, times: ["07:00"], start_date: today };
    $("s-kind").value = r.kind === "once" ? "once" : r.frequency;
    const once = r.kind === "once" ? onceLocal(String(r.at)) : { date: tomorrow, time: "07:00" };
    $("s-once-date").value = once.date;
    $("s-once-time").value = once.time;
    const rec = r.kind === "recurring" ? r : { interval: 1, times: ["07:00"], start_date: today };
    $("s-interval").value = rec.interval || 1;
    $("s-times").replaceChildren(...rec.times.map((t) => timeRow(hm(t))));
    $("s-start").value = rec.start_date;
    $("s-end").value = rec.end_date || "";
    state.exceptions = [...(rec.exceptions || [])];
    renderExceptions();
    const weekdays = rec.weekdays && rec.weekdays.length ? rec.weekdays : [weekdayOf(today)];
    for (let i = 0; i < 7; i++) $(`s-wd-${i}`).checked = weekdays.includes(i);
    $("s-month-by-day").checked = !rec.month_weekday;
    $("s-month-by-weekday").checked = Boolean(rec.month_weekday);
    $("s-month-day").value = rec.month_day || Number(today.slice(8, 10));
    $("s-month-wd").value = rec.month_weekday ? rec.month_weekday[0] : 0;
    $("s-month-nth").value = rec.month_weekday ? rec.month_weekday[1] : 1;
    $(s && s.bulletin_level === "priority" ? "s-level-priority" : "s-level-normal").checked = true;
    $("s-volume").value = s && s.volume_pct !== null ? s.volume_pct : "";
    $("s-gong").checked = s ? s.gong : false;
    $("s-enabled").checked = s ? s.enabled : true;
    $("s-queue").checked = s ? s.on_conflict === "queue_after" : false;
    clearFormMessages();
    showKind();
  }

  function clearFormMessages() {
    $("s-error").textContent = "";
    $("s-conflict").hidden = true;
    $("s-preview").replaceChildren();
    for (const el of document.querySelectorAll("#schedule-form [aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  function collectRule() {
    const kind = $("s-kind").value;
    if (kind === "once") {
      const date = $("s-once-date").value;
      const time = $("s-once-time").value;
      if (!date) fail(T.need_date, "s-once-date");
      if (!time) fail(T.need_time, "s-once-time");
      return { kind: "once", at: `${date}T${time.length === 5 ? `${time}:00` : time}` };
    }
    const inputs = [...document.querySelectorAll("#s-times input")];
    const times = inputs.map((i) => i.value).filter(Boolean);
    if (!times.length) {
      if (!inputs.length) $("s-times").append(timeRow(""));
      fail(T.need_time, document.querySelector("#s-times input"));
    }
    const interval = Number($("s-interval").value);
    if (!Number.isInteger(interval) || interval < 1 || interval > 365) fail(T.need_interval, "s-interval");
    const start = $("s-start").value;
    if (!start) fail(T.need_start, "s-start");
    const rule = { kind: "recurring", frequency: kind, interval, times, start_date: start };
    if ($("s-end").value) rule.end_date = $("s-end").value;
    if (state.exceptions.length) rule.exceptions = [...state.exceptions];
    if (kind === "weekly") {
      rule.weekdays = [0, 1, 2, 3, 4, 5, 6].filter((i) => $(`s-wd-${i}`).checked);
      if (!rule.weekdays.length) fail(T.need_weekday, "s-wd-0");
    }
    if (kind === "monthly") {
      if ($("s-month-by-day").checked) {
        const day = Number($("s-month-day").value);
        if (!Number.isInteger(day) || day < 1 || day > 31) fail(T.need_month_day, "s-month-day");
        rule.month_day = day;
      } else {
        rule.month_weekday = [Number($("s-month-wd").value), Number($("s-month-nth").value)];
      }
    }
    return rule;
  }

  function volumeOf(input) {
    const raw = input.value.trim();
    if (raw === "") return null;
    const v = Number(raw);
    if (!Number.isInteger(v) || v < 0 || v > 100) fail(T.need_volume, input);
    return v;
  }

  function collectBody() {
    const name = $("s-name").value.trim();
    if (!name) fail(T.need_name, "s-name");
    const audio = $("s-audio").value;
    if (!audio) fail(T.need_audio, "s-audio");
    const zones = checkedZones($("s-zones"));
    if (!zones.length) fail(T.need_zones, $("s-zones").querySelector("input"));
    return {
      name, audio_sha256: audio, rule: collectRule(), zone_ids: zones,
      bulletin_level: $("s-level-priority").checked ? "priority" : "normal",
      volume_pct: volumeOf($("s-volume")), gong: $("s-gong").checked,
      enabled: $("s-enabled").checked, on_conflict: $("s-queue").checked ? "queue_after" : "refuse",
    };
  }

  function showFormError(e, box) {
    if (!(e instanceof FormError)) throw e;
    box.textContent = e.message;
    const el = typeof e.field === "string" ? $(e.field) : e.field;
    if (el) { el.setAttribute("aria-invalid", "true"); el.focus(); }
  }

  function firstTimeInput() {
    return $("s-kind").value === "once" ? $("s-once-time") : document.querySelector("#s-times input") || $("s-time-add");
  }

  function showSaveError(e) {
    const err = apiError(e);
    if (e.status === 409 && err && err.code === "conflict" && err.conflicts && err.conflicts.length) {
      const [first, ...others] = err.conflicts;
      const when = localParts(first.other_at_local);
      let text = fmt(T.conflict, { name: first.name, when: `${dayName(when.date)} ${when.time}` });
      if (others.length) {
        text += " " + fmt(T.conflict_more, { n: others.length, names: others.map((c) => `“${c.name}”`).join(", ") });
      }
      $("s-conflict-text").textContent = text;
      $("s-conflict-choice").textContent = T.conflict_choice;
      $("s-queue-save").textContent = fmt(T.queue_after_button, { name: first.name });
      state.conflictName = first.name;
      $("s-conflict").hidden = false;
      $("s-queue-save").focus();
      return;
    }
    $("s-error").textContent = explain(err, fmt(T.not_saved, { message: e.message }));
    if (err && err.code === "quiet_hours") {
      const el = err.field === "on_conflict" ? $("s-queue") : firstTimeInput();
      el.setAttribute("aria-invalid", "true");
      el.focus();
    }
  }

  async function saveSchedule(onConflict) {
    clearFormMessages();
    let body;
    try {
      body = collectBody();
    } catch (e) {
      showFormError(e, $("s-error"));
      return;
    }
    if (onConflict) body.on_conflict = onConflict;
    $("s-save").disabled = true;
    try {
      const saved = state.editing
        ? await api("PUT", `/schedules/${state.editing.id}`, body)
        : await api("POST", "/schedules", body);
      $("schedule-dialog").close();
      say($("page-status"), fmt(T.saved, { name: saved.name }));
      refresh();
    } catch (e) {
      showSaveError(e);
    } finally {
      $("s-save").disabled = false;
    }
  }

  async function preview() {
    clearFormMessages();
    const out = $("s-preview");
    let rule;
    try {
      rule = collectRule();
    } catch (e) {
      showFormError(e, $("s-error"));
      return;
    }
    const body = { rule, count: 10, zone_ids: checkedZones($("s-zones")), gong: $("s-gong").checked,
                   bulletin_level: $("s-level-priority").checked ? "priority" : "normal" };
    if ($("s-audio").value) body.audio_sha256 = $("s-audio").value;
    out.replaceChildren(h("p", { class: "muted" }, T.loading));
    let p;
    try {
      p = await api("POST", "/schedules/preview", body);
    } catch (e) {
      out.replaceChildren();
      $("s-error").textContent = explain(apiError(e), e.message);
      return;
    }
    state.quietSpan = p.quiet_hours.span;
    const items = p.occurrences.map((o) => {
      const { date, time } = localParts(o.local);
      return h("li", {}, `${dayName(date)} ${time}`);
    });
    out.replaceChildren(
      h("h3", {}, T.preview_title),
      ...p.warnings.map((w) => h("p", { class: "bad" }, explain(w, w.message))),
      items.length ? h("ol", {}, items) : h("p", { class: "muted" }, T.preview_none),
      ...p.holidays_skipped.map((x) => h("p", { class: "muted" },
        fmt(T.preview_skipped, { date: dmy(x.date), name: x.name }))));
  }

  async function openEditor(scheduleId, opts) {
    const status = $("schedules-status");
    let schedule = null;
    try {
      await loadAudio();
      if (scheduleId) schedule = await api("GET", `/schedules/${scheduleId}`);
    } catch (e) {
      say(scheduleId ? status : $("page-status"), fmt(T.load_failed, { message: e.message }), "error");
      return;
    }
    state.editing = schedule;
    fillForm(schedule);
    if (opts && opts.enabled !== undefined) $("s-enabled").checked = opts.enabled;
    $("schedule-dialog").showModal();
    $("s-name").focus();
    if (opts && opts.error) showSaveError(opts.error);
  }

  function setUpScheduleForm() {
    const wd = $("s-weekdays");
    WEEKDAYS.forEach((name, i) => {
      wd.append(h("label", { class: "inline", for: `s-wd-${i}` },
        h("input", { type: "checkbox", id: `s-wd-${i}`, value: i }), " ", name));
    });
    $("s-month-wd").replaceChildren(...WEEKDAYS.map((name, i) => h("option", { value: i }, name)));
    $("s-month-nth").replaceChildren(
      ...NTH.map((w, i) => h("option", { value: i + 1 }, w)),
      ...NTH_LAST.map((w, i) => h("option", { value: -(i + 1) }, w)));
    $("s-kind").addEventListener("change", showKind);
    $("s-month-by-day").addEventListener("change", showKind);
    $("s-month-by-weekday").addEventListener("change", showKind);
    $("s-time-add").addEventListener("click", () => {
      const row = timeRow("");
      $("s-times").append(row);
      row.querySelector("input").focus();
    });
    $("s-exception-add").addEventListener("click", () => {
      const d = $("s-exception-new").value;
      if (d && !state.exceptions.includes(d)) {
        state.exceptions = [...state.exceptions, d].sort();
        renderExceptions();
      }
      $("s-exception-new").value = "";
    });
    $("schedule-form").addEventListener("submit", (e) => { e.preventDefault(); saveSchedule(); });
    $("s-preview-btn").addEventListener("click", preview);
    $("s-cancel").addEventListener("click", () => $("schedule-dialog").close());
    $("s-queue-save").addEventListener("click", () => {
      $("s-queue").checked = true;
      saveSchedule("queue_after");
    });
    $("s-change").addEventListener("click", () => {
      $("s-conflict").hidden = true;
      firstTimeInput().focus();
    });
    $("new-schedule").addEventListener("click", () => openEditor(null));
  }

  // --- play now ----------------------------------------------------------------------------

  function playTargets() {
    const audio = (state.audio || []).find((a) => a.sha256 === $("p-audio").value);
    if (!audio) fail(T.need_audio, "p-audio");
    const zones = checkedZones($("p-zones"));
    if (!zones.length) fail(T.need_zones, $("p-zones").querySelector("input"));
    return { audio, zones, volume: volumeOf($("p-volume")) };
  }

  async function openPlay() {
    try {
      await loadAudio();
    } catch (e) {
      say($("page-status"), fmt(T.load_failed, { message: e.message }), "error");
      return;
    }
    fillAudio($("p-audio"), $("p-listen"), "");
    zoneChecklist($("p-zones"), "p-zone-", currentCommune(), [state.zone]);
    $("p-volume").value = "";
    $("p-gong").checked = false;
    $("p-error").textContent = "";
    $("p-confirm").hidden = true;
    $("p-buttons").hidden = false;
    $("play-dialog").showModal();
    $("p-audio").focus();
  }

  function askToPlay() {
    $("p-error").textContent = "";
    let t;
    try {
      t = playTargets();
    } catch (e) {
      showFormError(e, $("p-error"));
      return;
    }
    $("p-confirm-text").textContent = fmt(T.confirm_play,
      { audio: t.audio.name, zones: t.zones.map(zoneName).join(", ") });
    $("p-confirm").hidden = false;
    $("p-buttons").hidden = true;
    $("p-go").focus();
  }

  async function playNow() {
    let t;
    try {
      t = playTargets();
    } catch (e) {
      showFormError(e, $("p-error"));
      return;
    }
    $("p-go").disabled = true;
    try {
      const body = { audio_sha256: t.audio.sha256, zone_ids: t.zones, priority: "live",
                     gong: $("p-gong").checked, title: t.audio.name.slice(0, 200) };
      if (t.volume !== null) body.volume_pct = t.volume;
      const broadcast = await api("POST", "/broadcasts", body);
      $("play-dialog").close();
      watch(broadcast, t.audio.name);
    } catch (e) {
      $("p-error").textContent = fmt(T.not_saved, { message: e.message });
      $("p-confirm").hidden = true;
      $("p-buttons").hidden = false;
    } finally {
      $("p-go").disabled = false;
    }
  }

  function renderDelivery(b) {
    const deliveries = b.deliveries || [];
    const counts = {};
    for (const d of deliveries) counts[d.status] = (counts[d.status] || 0) + 1;
    $("playing-counters").replaceChildren(...STATUSES.filter((s) => counts[s]).map((s) =>
      h("div", { class: "counter", "data-status": s }, h("b", {}, String(counts[s])), T[`status_${s}`])));
    const done = deliveries.length > 0 && deliveries.every((d) => FINAL.has(d.status));
    return { total: deliveries.length, done };
  }

  // Follows one broadcast: its delivery every 2 s for a minute (or until all have answered).
  function watch(broadcast, audioName) {
    if (state.playing) clearInterval(state.playing.timer);
    const started = Date.now();
    const sent = siteLocal(new Date());
    $("playing").hidden = false;
    $("playing-title").textContent = fmt(T.playing_title, { audio: audioName });
    $("playing-sent").textContent = fmt(T.sent_at,
      { time: `${sent.time}:${sent.seconds}`, zones: broadcast.zone_ids.map(zoneName).join(", ") });
    $("stop").disabled = false;
    const show = (b) => {
      const { total, done } = renderDelivery(b);
      const note = total === 0 ? T.no_devices : done ? T.all_done : fmt(T.devices_total, { n: total });
      if (!state.playing.stopNote) $("playing-note").textContent = note;
      return done || total === 0;
    };
    state.playing = { broadcast, timer: null, stopNote: "" };
    const playing = state.playing;
    $("playing").scrollIntoView({ block: "nearest" });
    if (show(broadcast)) return;
    playing.timer = setInterval(async () => {
      if (Date.now() - started > 60000) {
        clearInterval(playing.timer);
        $("playing-note").textContent = `${playing.stopNote} ${T.watch_ended}`.trim();
        return;
      }
      try {
        const b = await api("GET", `/broadcasts/${encodeURIComponent(broadcast.id)}`);
        if (state.playing === playing && show(b)) clearInterval(playing.timer);
      } catch (e) { /* a missed refresh: the next one tries again */ }
    }, 2000);
  }

  async function stopPlaying() {
    const p = state.playing;
    if (!p) return;
    $("stop").disabled = true;
    try {
      await api("POST", "/stop", { target_id: p.broadcast.id, zone_ids: p.broadcast.zone_ids });
      const at = siteLocal(new Date());
      p.stopNote = fmt(T.stop_sent, { time: `${at.time}:${at.seconds}` });
      $("playing-note").textContent = p.stopNote;
    } catch (e) {
      $("playing-note").textContent = fmt(T.not_saved, { message: e.message });
      $("stop").disabled = false;
    }
  }

  function setUpPlay() {
    $("play-now").addEventListener("click", openPlay);
    $("play-form").addEventListener("submit", (e) => { e.preventDefault(); askToPlay(); });
    $("p-go").addEventListener("click", playNow);
    $("p-back").addEventListener("click", () => {
      $("p-confirm").hidden = true;
      $("p-buttons").hidden = false;
      $("p-audio").focus();
    });
    $("p-cancel").addEventListener("click", () => $("play-dialog").close());
    $("stop").addEventListener("click", stopPlaying);
  }

  // --- quiet hours and holidays ------------------------------------------------------------

  async function loadQuietHours(commune) {
    try {
      const q = await api("GET", `/communes/${encodeURIComponent(commune)}/quiet-hours`);
      state.quietSpan = q.span;
      $("quiet-text").textContent = q.none ? T.quiet_none
        : `${fmt(T.quiet_now, { span: q.span })}${q.default ? ` ${T.quiet_default}` : ""}`;
      if ($("quiet-form")) {
        $("q-start").value = q.start;
        $("q-end").value = q.end;
      }
    } catch (e) {
      $("quiet-text").textContent = fmt(T.load_failed, { message: e.message });
    }
  }

  // Consecutive days with the same name are one holiday (Tết): shown and removed together.
  function holidayRanges(days) {
    const out = [];
    for (const d of days) {
      const last = out[out.length - 1];
      if (last && last.name === d.name && addDays(last.end, 1) === d.date) {
        last.end = d.date;
        last.days.push(d.date);
      } else out.push({ name: d.name, start: d.date, end: d.date, days: [d.date] });
    }
    return out;
  }

  async function loadHolidays(commune) {
    const list = $("holidays");
    let days;
    try {
      days = await api("GET", `/communes/${encodeURIComponent(commune)}/holidays`);
    } catch (e) {
      list.replaceChildren(h("li", { class: "error" }, fmt(T.load_failed, { message: e.message })));
      return;
    }
    const from = `${todayISO().slice(0, 4)}-01-01`;
    const ranges = holidayRanges(days.filter((d) => d.date >= from));
    if (!ranges.length) {
      list.replaceChildren(h("li", { class: "muted" }, T.no_holidays));
      return;
    }
    list.replaceChildren(...ranges.map((r) => {
      const span = r.start === r.end ? dayName(r.start) : `${dmy(r.start)} – ${dmy(r.end)}`;
      return h("li", { "data-start": r.start }, h("b", {}, r.name), ": ", span,
        cfg.can_edit ? h("button", { type: "button", class: "secondary",
          "aria-label": fmt(T.delete_holiday, { name: r.name }),
          onclick: () => deleteHoliday(commune, r, span) }, T.delete) : null);
    }));
  }

  async function deleteHoliday(commune, range, span) {
    if (!window.confirm(fmt(T.confirm_holiday_delete, { name: range.name, days: span }))) return;
    const status = $("holiday-status");
    try {
      for (const day of range.days) {
        await api("DELETE", `/communes/${encodeURIComponent(commune)}/holidays/${day}`);
      }
      say(status, fmt(T.holiday_removed, { name: range.name }));
    } catch (e) {
      say(status, fmt(T.not_saved, { message: e.message }), "error");
    }
    loadHolidays(commune);
    loadProgramme();
  }

  async function addHoliday(e) {
    e.preventDefault();
    const commune = currentCommune();
    const status = $("holiday-status");
    const name = $("h-name").value.trim();
    const start = $("h-start").value;
    const end = $("h-end").value;
    if (!name || !start) {
      say(status, T.need_holiday, "error");
      $(name ? "h-start" : "h-name").focus();
      return;
    }
    const body = { name, date: start };
    if (end && end !== start) body.end_date = end;
    try {
      await api("POST", `/communes/${encodeURIComponent(commune)}/holidays`, body);
      say(status, fmt(T.holiday_added, { name }));
      $("holiday-form").reset();
    } catch (err) {
      const data = apiError(err);
      const taken = data && data.code === "exists" && /(\d{4}-\d\d-\d\d) is already/.exec(data.message);
      say(status, taken ? fmt(T.holiday_exists, { date: dmy(taken[1]), name: quotedName(data.message) })
        : fmt(T.not_saved, { message: err.message }), "error");
      return;
    }
    loadHolidays(commune);
    loadProgramme();
  }

  async function saveQuietHours(e) {
    e.preventDefault();
    const commune = currentCommune();
    const status = $("quiet-status");
    const start = $("q-start").value;
    const end = $("q-end").value;
    if (!start || !end) {
      say(status, T.need_time, "error");
      return;
    }
    try {
      const q = await api("PUT", `/communes/${encodeURIComponent(commune)}/quiet-hours`, { start, end });
      say(status, q.none ? T.quiet_none : fmt(T.quiet_saved, { span: q.span }));
    } catch (err) {
      const data = apiError(err);
      if (data && data.code === "schedules_in_quiet_hours") {
        const names = data.schedules.map((s) => `“${s.name}” (${s.local_time})`).join(", ");
        say(status, fmt(T.quiet_clash, { names }), "error");
      } else say(status, fmt(T.not_saved, { message: err.message }), "error");
      return;
    }
    loadQuietHours(commune);
  }

  function loadCommune() {
    const commune = currentCommune();
    $("commune-name").textContent = zoneName(commune);
    loadQuietHours(commune);
    loadHolidays(commune);
  }

  // --- start -------------------------------------------------------------------------------

  zoneSelect.addEventListener("change", () => {
    const before = currentCommune();
    state.zone = zoneSelect.value;
    state.weekOffset = 0;
    const url = new URL(window.location.href);
    url.searchParams.set("zone", state.zone);
    window.history.replaceState(null, "", url);
    loadProgramme();
    if (currentCommune() !== before) {
      renderSchedules();
      loadCommune();
    }
  });
  $("week-prev").addEventListener("click", () => { state.weekOffset -= 1; renderWeek(); });
  $("week-this").addEventListener("click", () => { state.weekOffset = 0; renderWeek(); });
  $("week-next").addEventListener("click", () => { state.weekOffset += 1; renderWeek(); });
  if (cfg.can_edit) {
    setUpScheduleForm();
    setUpPlay();
    $("holiday-form").addEventListener("submit", addHoliday);
  }
  if (cfg.can_set_quiet) $("quiet-form").addEventListener("submit", saveQuietHours);
  renderWeek();
  loadProgramme();
  loadSchedules();
  loadCommune();
})();
