// The audio page: the library (search, pages, a player per file) for everyone; for operators
// also upload with progress, recording from the microphone, typed text spoken, and deletion.
// Every text shown comes from the page's messages (the user's language); data is inserted as
// text only (loa.h), never as HTML.
"use strict";
(function () {
  const cfg = JSON.parse(document.getElementById("audio-config").textContent);
  const M = cfg.messages;
  const h = loa.h;
  const $ = (id) => document.getElementById(id);
  const locale = document.body.dataset.lang === "en" ? "en-GB" : "vi-VN";

  // Fills "%(name)s" / "%(n)d" fields of a message; "%%" is a percent sign.
  function fmt(template, values) {
    return template.replace(/%\((\w+)\)[sd]|%%/g, (m, key) => (m === "%%" ? "%" : String(values[key])));
  }

  function joinList(items) {
    if (items.length <= 1) return items.join("");
    return items.slice(0, -1).join(", ") + " " + M.and + " " + items[items.length - 1];
  }

  function usedBy(schedules, presets, markOff) {
    return schedules.map((s) => fmt(M.used_schedule, { name: s.name }) +
                                (markOff && !s.enabled ? " " + M.paused : ""))
      .concat(presets.map((p) => fmt(M.used_preset, { name: p.title })));
  }

  // An API refusal in plain words of the user's language (the API's own words as a fallback).
  function refusal(err, audioName) {
    if (!err.status) return M.network;
    const e = (err.data && err.data.error) || {};
    if (e.code === "in_use") {
      return fmt(M.in_use, { name: audioName, users: joinList(usedBy(e.schedules || [], e.presets || [])) });
    }
    if (e.code === "invalid" && M["invalid_" + e.field]) return M["invalid_" + e.field];
    if (M[e.code]) return M[e.code];
    if (err.status === 401) return M.unauthorized;
    if (err.status === 403) return M.forbidden;
    if (err.status === 413) return M.too_large;
    return fmt(M.unknown, { message: err.message });
  }

  function say(el, message, kind) {
    el.textContent = message || "";
    el.classList.toggle("error", kind === "error");
    el.classList.toggle("ok", kind === "ok");
  }

  // Runs work() with the button disabled and saying "Processing…"; always restores it.
  async function busy(button, work) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = M.busy;
    button.setAttribute("aria-busy", "true");
    try {
      return await work();
    } finally {
      button.disabled = false;
      button.textContent = label;
      button.removeAttribute("aria-busy");
    }
  }

  function duration(ms) {
    const total = Math.round((ms || 0) / 1000);
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = String(total % 60).padStart(2, "0");
    return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
  }

  function loudness(lufs) {
    if (lufs === null || lufs === undefined) return "–";
    return lufs.toLocaleString(locale, { minimumFractionDigits: 1, maximumFractionDigits: 1 }) + " LUFS";
  }

  // --- the library ---------------------------------------------------------------------

  const list = $("library");
  const state = { offset: 0, query: "", total: 0, seq: 0 };

  async function load() {
    const seq = ++state.seq;
    const params = new URLSearchParams({ limit: cfg.page_size, offset: state.offset });
    if (state.query) params.set("q", state.query);
    let resp, data;
    try {
      resp = await fetch("/api/v1/audio?" + params, { headers: { Accept: "application/json" },
                                                      credentials: "same-origin" });
      data = await resp.json().catch(() => null);
    } catch (e) {
      if (seq === state.seq) say($("library-status"), fmt(M.loading_failed, { message: M.network }), "error");
      return;
    }
    if (seq !== state.seq) return; // a newer search has been asked for
    if (!resp.ok) {
      const err = Object.assign(new Error(resp.statusText), { status: resp.status, data });
      say($("library-status"), fmt(M.loading_failed, { message: refusal(err, "") }), "error");
      return;
    }
    state.total = Number(resp.headers.get("X-Total-Count") || data.length);
    if (!data.length && state.offset > 0) { // the last item of the last page was deleted
      state.offset = Math.max(0, state.offset - cfg.page_size);
      return load();
    }
    render(data);
  }

  function render(files) {
    list.replaceChildren(...files.map(item));
    const count = $("library-count");
    if (!state.total) count.textContent = state.query ? fmt(M.none_found, { q: state.query }) : M.none;
    else count.textContent = fmt(state.query ? M.found : M.count, { n: state.total });
    const pages = Math.max(1, Math.ceil(state.total / cfg.page_size));
    const current = Math.floor(state.offset / cfg.page_size) + 1;
    $("pager").hidden = pages <= 1;
    $("page-info").textContent = fmt(M.page, { page: current, pages });
    $("page-prev").disabled = current <= 1;
    $("page-next").disabled = current >= pages;
  }

  function item(a) {
    const uses = usedBy(a.used_by.schedules, a.used_by.presets, true);
    const added = a.created_by_name
      ? fmt(M.added_by, { user: a.created_by_name, when: loa.localTime(a.created_at) })
      : fmt(M.added_at, { when: loa.localTime(a.created_at) });
    const status = h("p", { class: "status", role: "status" });
    const li = h("li", { class: "audio-item", "data-sha": a.sha256 },
      h("h3", {}, a.name),
      h("p", {},
        h("span", {}, M.duration + ": ", h("b", {}, duration(a.duration_ms))), " · ",
        h("span", {}, M.loudness + ": ", h("b", {}, loudness(a.loudness_lufs)))),
      h("p", { class: "muted" }, added, a.original_name ? ` · ${M.original}: ${a.original_name}` : ""),
      uses.length ? h("p", {}, M.used_by + " " + joinList(uses)) : h("p", { class: "muted" }, M.unused),
      h("audio", { controls: true, preload: "none", src: `/api/v1/audio/${a.sha256}/file`,
                   "aria-label": fmt(M.preview_of, { name: a.name }) }),
      cfg.can_edit ? deleteControl(a, status) : null,
      status);
    return li;
  }

  function deleteControl(a, status) {
    const box = h("div", {});
    const ask = h("button", { type: "button", class: "danger",
                              "aria-label": `${M.delete} “${a.name}”` }, M.delete);
    box.append(ask);
    ask.addEventListener("click", () => {
      say(status, "");
      const yes = h("button", { type: "button", class: "danger" }, M.yes_delete);
      const no = h("button", { type: "button", class: "secondary" }, M.cancel);
      const confirm = h("div", { class: "confirm", role: "group", "aria-label": fmt(M.confirm_delete, { name: a.name }) },
        h("p", {}, fmt(M.confirm_delete, { name: a.name })), yes, no);
      const close = () => { confirm.remove(); ask.hidden = false; ask.focus(); };
      no.addEventListener("click", close);
      confirm.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
      yes.addEventListener("click", () => busy(yes, async () => {
        try {
          const result = await loa.api("DELETE", `/audio/${a.sha256}`);
          const done = fmt(result.kept_for_history ? M.hidden : M.deleted, { name: a.name });
          say($("library-status"), done, "ok");
          await load();
          $("library-status").focus();
        } catch (err) {
          confirm.remove();
          ask.hidden = false;
          say(status, refusal(err, a.name), "error");
          ask.focus();
        }
      }));
      ask.hidden = true;
      box.append(confirm);
      no.focus();
    });
    return box;
  }

  async function showNew(audio) {
    state.query = "";
    state.offset = 0;
    $("search-q").value = "";
    await load();
    const row = list.querySelector(`[data-sha="${audio.sha256}"]`);
    if (row) row.classList.add("new");
  }

  let searchTimer = null;
  function search() {
    clearTimeout(searchTimer);
    const q = $("search-q").value.trim();
    if (q === state.query) return;
    state.query = q;
    state.offset = 0;
    load();
  }
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("search-q").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, 350); });
  $("page-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - cfg.page_size); load(); });
  $("page-next").addEventListener("click", () => { state.offset += cfg.page_size; load(); });
  $("library-status").tabIndex = -1;

  // --- adding audio (operators) ----------------------------------------------------------

  // Uploads a file with a progress bar; resolves to the stored audio or rejects with words.
  async function sendFile(file, filename, name, progress, status) {
    if (file.size > cfg.max_upload_bytes) throw new Error(M.too_large);
    const form = new FormData();
    form.append("file", file, filename);
    if (name) form.append("name", name);
    progress.hidden = false;
    progress.value = 0;
    say(status, fmt(M.uploading, { pct: 0 }));
    try {
      const audio = await loa.upload("/audio", form, (fraction) => {
        progress.value = fraction;
        say(status, fraction < 1 ? fmt(M.uploading, { pct: Math.round(fraction * 100) }) : M.processing);
      });
      progress.value = 1;
      return audio;
    } catch (err) {
      progress.hidden = true;
      throw new Error(refusal(err, name));
    }
  }

  function setupUpload() {
    const form = $("upload-form");
    const input = $("upload-file");
    const status = $("upload-status");
    input.addEventListener("change", () => input.removeAttribute("aria-invalid"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const file = input.files[0];
      if (!file) {
        say(status, M.no_file, "error");
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      busy($("upload-button"), async () => {
        try {
          const audio = await sendFile(file, file.name, $("upload-name").value.trim(),
                                       $("upload-progress"), status);
          say(status, fmt(M.added, { name: audio.name }), "ok");
          form.reset();
          await showNew(audio);
        } catch (err) {
          say(status, err.message, "error");
        }
      });
    });
  }

  function setupRecorder() {
    const start = $("record-start");
    const stop = $("record-stop");
    const timer = $("record-timer");
    const form = $("record-form");
    const preview = $("record-preview");
    const status = $("record-status");
    let recorder = null;
    let take = null;
    let tick = null;

    if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder)) {
      say($("record-unavailable"), M.no_recorder, "error");
      $("record-unavailable").hidden = false;
      start.disabled = true;
      return;
    }

    function showTime(ms) { timer.textContent = duration(Math.floor(ms / 1000) * 1000); }

    function discard() {
      if (preview.src) URL.revokeObjectURL(preview.src);
      preview.removeAttribute("src");
      take = null;
      form.hidden = true;
      $("record-progress").hidden = true;
      showTime(0);
    }

    start.addEventListener("click", async () => {
      discard();
      say(status, "");
      let stream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (err) {
        say(status, M.mic_denied, "error");
        return;
      }
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
      recorder.addEventListener("stop", () => {
        clearInterval(tick);
        stream.getTracks().forEach((t) => t.stop());
        timer.classList.remove("on");
        take = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
        preview.src = URL.createObjectURL(take);
        form.hidden = false;
        stop.hidden = true;
        start.hidden = false;
        say(status, M.recorded);
        $("record-name").focus();
      });
      const began = Date.now();
      recorder.start();
      showTime(0);
      timer.classList.add("on");
      tick = setInterval(() => {
        const elapsed = Date.now() - began;
        showTime(elapsed);
        if (elapsed >= cfg.max_record_s * 1000 && recorder.state === "recording") {
          recorder.stop();
          say(status, M.max_reached);
        }
      }, 250);
      start.hidden = true;
      stop.hidden = false;
      stop.focus();
      say(status, M.recording);
    });

    stop.addEventListener("click", () => { if (recorder && recorder.state === "recording") recorder.stop(); });
    $("record-discard").addEventListener("click", () => { discard(); say(status, ""); start.focus(); });

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!take) return;
      const type = take.type || "";
      const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      busy($("record-save"), async () => {
        try {
          const audio = await sendFile(take, `recording.${ext}`, $("record-name").value.trim(),
                                       $("record-progress"), status);
          say(status, fmt(M.added, { name: audio.name }), "ok");
          $("record-name").value = "";
          discard();
          await showNew(audio);
        } catch (err) {
          say(status, err.message, "error");
        }
      });
    });
  }

  function setupSpeech() {
    const form = $("tts-form");
    const text = $("tts-text");
    const status = $("tts-status");
    const count = () => {
      $("tts-count").textContent = fmt(M.chars, { n: text.value.length, max: cfg.max_text_chars });
    };
    text.addEventListener("input", () => { count(); text.removeAttribute("aria-invalid"); });
    count();
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!text.value.trim()) {
        say(status, M.text_empty, "error");
        text.setAttribute("aria-invalid", "true");
        text.focus();
        return;
      }
      busy($("tts-button"), async () => {
        say(status, M.busy);
        try {
          const audio = await loa.api("POST", "/audio/tts", {
            text: text.value, voice: $("tts-voice").value, name: $("tts-name").value.trim(),
          });
          say(status, fmt(M.added, { name: audio.name }), "ok");
          text.value = "";
          $("tts-name").value = "";
          count();
          await showNew(audio);
        } catch (err) {
          const code = err.data && err.data.error && err.data.error.code;
          const nothing = code === "silent" || code === "too_short";
          say(status, nothing ? M.tts_nothing : refusal(err, ""), "error");
        }
      });
    });
  }

  if (cfg.can_edit) {
    setupUpload();
    setupRecorder();
    setupSpeech();
  }
  load();
})();
