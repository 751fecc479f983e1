// The emergency page: zones, message (ready announcement, typed text or a recording), repeat,
// ONE confirmation, then the live panel (devices received / playing / failed / silent) and STOP.
// Everything goes through the JSON API (loa.api); text is always set as text, never as HTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("em-config").textContent);
  const M = config.messages;
  const form = $("em-form");
  const dialog = $("em-confirm");
  const h = loa.h;

  // "%(name)s" fields of a translated message, filled in as text.
  function fmt(message, values) {
    return message.replace(/%\((\w+)\)[sd]/g, (_, k) => (k in values ? String(values[k]) : ""));
  }
  function setText(el, value) { el.textContent = value || ""; }

  // --- step 1: zones ----------------------------------------------------------------------
  const zoneBoxes = Array.from(document.querySelectorAll('input[name="zone"]'));
  const byId = new Map(zoneBoxes.map((b) => [b.value, b]));
  const childrenOf = (id) => zoneBoxes.filter((b) => b.dataset.parent === id);
  function descendants(id) {
    const out = [];
    for (const child of childrenOf(id)) out.push(child, ...descendants(child.value));
    return out;
  }
  // A ticked zone includes everything below it: shown ticked and greyed, not sent twice.
  function syncZones() {
    for (const box of zoneBoxes) { box.disabled = false; }
    for (const box of zoneBoxes) {
      if (box.checked && !box.disabled) {
        for (const d of descendants(box.value)) { d.checked = true; d.disabled = true; }
      }
    }
  }
  for (const box of zoneBoxes) {
    box.addEventListener("change", () => {
      if (!box.checked) for (const d of descendants(box.value)) d.checked = false;
      syncZones();
    });
  }
  syncZones();
  const chosenZones = () => zoneBoxes.filter((b) => b.checked && !b.disabled);

  // --- step 2: the message ------------------------------------------------------------------
  const kind = () => form.querySelector('input[name="kind"]:checked').value;
  function showPanel() {
    for (const k of ["preset", "text", "record"]) $("em-panel-" + k).hidden = k !== kind();
  }
  for (const r of form.querySelectorAll('input[name="kind"]')) r.addEventListener("change", showPanel);
  showPanel();

  // Recording: MediaRecorder, then the file is uploaded like any audio (POST /audio).
  let recordedSha = null;
  let recorder = null;
  let recordTimer = null;
  const recordStatus = $("em-record-status");
  const progress = $("em-upload-progress");
  const preview = $("em-record-preview");

  async function uploadRecording(blob, filename) {
    recordedSha = null;
    setText(recordStatus, M.uploading);
    progress.hidden = false;
    progress.value = 0;
    const data = new FormData();
    data.append("file", blob, filename);
    data.append("name", filename.replace(/\.[^.]*$/, ""));
    try {
      const audio = await loa.upload("/audio", data, (p) => { progress.value = p; });
      recordedSha = audio.sha256;
      setText(recordStatus, M.uploaded);
    } catch (err) {
      setText(recordStatus, fmt(M.send_failed, { message: err.message }));
    } finally {
      progress.hidden = true;
    }
  }

  function stopRecording() {
    clearTimeout(recordTimer);
    if (recorder && recorder.state !== "inactive") recorder.stop();
  }

  $("em-record").addEventListener("click", async () => {
    if (recorder && recorder.state === "recording") { stopRecording(); return; }
    if (!navigator.mediaDevices || !window.MediaRecorder) { setText(recordStatus, M.no_recorder); return; }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      setText(recordStatus, M.mic_denied);
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      setText($("em-record"), M.record);
      const type = recorder.mimeType || "audio/webm";
      const blob = new Blob(chunks, { type });
      preview.src = URL.createObjectURL(blob);
      preview.hidden = false;
      const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      const now = new Date();
      const stamp = `${now.getHours()}h${String(now.getMinutes()).padStart(2, "0")}`;
      uploadRecording(blob, `khan-cap-ghi-am-${stamp}.${ext}`);
    };
    recorder.start();
    recordTimer = setTimeout(stopRecording, config.max_record_s * 1000);
    setText($("em-record"), M.stop_recording);
    setText(recordStatus, M.recording_now);
  });

  $("em-record-file").addEventListener("change", (e) => {
    const file = e.target.files && e.target.files[0];
    if (!file) return;
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    uploadRecording(file, file.name);
  });

  // --- step 3 and the request ------------------------------------------------------------------
  function repeatChoice() {
    const value = form.querySelector('input[name="repeat"]:checked').value;
    if (value === "n") return Number($("em-repeat-n").value);
    return value === "until_stopped" ? value : 1;
  }
  $("em-repeat-n").addEventListener("focus", () => {
    form.querySelector('input[name="repeat"][value="n"]').checked = true;
  });

  // The request body and the words of the confirmation; throws an Error with what is missing.
  function prepare() {
    const zones = chosenZones();
    if (!zones.length) throw new Error(M.no_zone);
    const speakers = zones.reduce((n, z) => n + Number(z.dataset.speakers), 0);
    const online = zones.reduce((n, z) => n + Number(z.dataset.online), 0);
    if (!speakers) throw new Error(M.no_speakers);
    const body = { zone_ids: zones.map((z) => z.value) };
    let title;
    if (kind() === "preset") {
      const chosen = form.querySelector('input[name="preset"]:checked');
      if (!chosen) throw new Error(M.no_preset);
      body.preset_key = chosen.value;
      title = chosen.dataset.title;
    } else if (kind() === "text") {
      const text = $("em-text").value.trim();
      if (!text) throw new Error(M.no_text);
      if (text.length > config.max_text_chars) throw new Error(fmt(M.text_too_long, { n: config.max_text_chars }));
      body.text = text;
      const own = $("em-text-title").value.trim();
      if (own) body.title = own;
      title = own || (text.length > 60 ? text.slice(0, 60) + "…" : text);
    } else {
      if (!recordedSha) throw new Error(M.no_recording);
      body.audio_sha256 = recordedSha;
      title = M.recording;
    }
    const repeat = repeatChoice();
    if (repeat !== "until_stopped" && !(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) {
      throw new Error(M.bad_repeat);
    }
    body.repeat = repeat;
    const names = zones.map((z) => (z.dataset.kind === "commune" ? fmt(M.whole, { name: z.dataset.name }) : z.dataset.name));
    const where = names.length > 1 ? names.slice(0, -1).join(", ") + " " + M.and + " " + names[names.length - 1] : names[0];
    const sentence = fmt(M.confirm, { title, where, n: speakers });
    const times = repeat === "until_stopped" ? M.until_stopped : repeat === 1 ? M.once : fmt(M.times, { n: repeat });
    const offline = speakers - online > 0 ? " " + fmt(M.offline, { n: speakers - online }) : "";
    return { body, title, sentence, detail: times + offline };
  }

  let pending = null;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setText($("em-error"), "");
    try {
      pending = prepare();
    } catch (err) {
      setText($("em-error"), err.message);
      return;
    }
    setText($("em-confirm-text"), pending.sentence);
    setText($("em-confirm-detail"), pending.detail);
    setText($("em-confirm-status"), "");
    $("em-go").disabled = false;
    dialog.showModal();
    $("em-cancel").focus();  // the safe choice has the focus; "Play now" is one Tab away
  });
  $("em-cancel").addEventListener("click", () => dialog.close());

  $("em-go").addEventListener("click", async () => {
    if (!pending) return;
    $("em-go").disabled = true;
    setText($("em-confirm-status"), pending.body.text ? M.speaking : M.sending);
    try {
      const broadcast = await loa.api("POST", "/emergency", pending.body);
      dialog.close();
      form.hidden = true;
      history.replaceState(null, "", "?broadcast=" + encodeURIComponent(broadcast.id));
      follow(broadcast.id, broadcast.title);
    } catch (err) {
      const message = err.status === 503 ? M.unavailable
        : err.status === 401 ? M.logged_out : fmt(M.send_failed, { message: err.message });
      setText($("em-confirm-status"), message);
      $("em-go").disabled = false;
    }
  });

  // --- the live panel ------------------------------------------------------------------------
  let source = null;
  let current = null;   // the broadcast followed
  let last = null;      // its last progress
  let stopSentAt = null;

  function follow(id, title) {
    current = { id, title: title || "" };
    $("em-live").hidden = false;
    const rules = $("em-fire-rules");
    if (rules) rules.hidden = true;  // nothing but the emergency while it plays
    setText($("em-live-title"), fmt(M.live_title, { title: current.title }));
    $("em-live-title").focus();
    if (source) source.close();
    source = loa.live("/api/v1/broadcasts/" + encodeURIComponent(id) + "/live", { progress: render }, (up) => {
      if (!up && !(last && last.done)) setText($("em-live-summary"), M.lost);
    });
  }

  function deviceLine(d, extra) {
    return h("li", {}, h("strong", {}, d.name), " (", d.zone_name, ")", extra ? [" — ", extra] : null);
  }

  function render(p) {
    last = p;
    for (const [key, n] of Object.entries(p.counts)) {
      const box = document.querySelector(`[data-counter="${key}"] b`);
      if (box) box.textContent = String(n);
    }
    setText($("em-live-repeat"), p.until_stopped ? M.until_stopped : "");
    setText($("em-live-summary"), p.done ? M.done : summary(p));
    $("em-failures").replaceChildren(...p.failures.map((d) => deviceLine(d, d.reason || M.no_reason)));
    $("em-no-failures").hidden = p.failures.length > 0;
    $("em-silent").replaceChildren(...p.silent_devices.map((d) => deviceLine(d, null)));
    setText($("em-silent-count"), String(p.counts.silent));
    if (stopSentAt) showStopProgress();
    if (p.done && source) { source.close(); source = null; }
  }

  // What STOP has achieved: sent (when), then how many speakers confirmed, then all stopped.
  // "3 speakers: 1 playing, 1 failed, 1 not answered." (states with none left out)
  function summary(p) {
    const parts = ["playing", "received", "finished", "failed", "silent", "stopped", "preempted"]
      .filter((k) => p.counts[k] > 0).map((k) => fmt(M["count_" + k], { n: p.counts[k] }));
    return fmt(M.summary, { total: p.total, parts: parts.join(", ") });
  }

  function showStopProgress() {
    const sent = fmt(M.stop_sent, { time: loa.localTime(stopSentAt.toISOString()).slice(-8) });
    const c = last ? last.counts : null;
    const active = c ? c.received + c.playing : 1;
    if (c && active === 0) setText($("em-stop-status"), M.stop_all_confirmed);
    else if (c && c.stopped) {
      setText($("em-stop-status"), sent + " " + fmt(M.stop_confirmed, { n: c.stopped, total: c.stopped + active }));
    } else setText($("em-stop-status"), sent);
  }

  $("em-stop").addEventListener("click", async () => {
    if (!current) return;
    const button = $("em-stop");
    button.disabled = true;
    try {
      const body = { target_id: current.id };
      if (last && last.zone_ids) body.zone_ids = last.zone_ids;
      await loa.api("POST", "/stop", body);
      stopSentAt = new Date();
      showStopProgress();
    } catch (err) {
      setText($("em-stop-status"), fmt(M.stop_failed, { message: err.message }));
    } finally {
      button.disabled = false;  // STOP can always be pressed again
    }
  });

  if (config.resume) {
    form.hidden = true;
    follow(config.resume, config.resume_title);
  }

  // --- the automatic fire announcement (administrators) -------------------------------------
  for (const ruleForm of document.querySelectorAll("form.fire-rule")) {
    ruleForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const status = ruleForm.querySelector(".status");
      const value = ruleForm.querySelector("select").value;
      try {
        await loa.api("PUT", "/communes/" + encodeURIComponent(ruleForm.dataset.zone) + "/fire-rule",
          { preset_key: value || null });
        setText(status, M.saved);
      } catch (err) {
        setText(status, fmt(M.save_failed, { message: err.message }));
      }
    });
  }
})();
