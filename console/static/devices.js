// The devices and zones page: the zone tree with device counts, the devices of the chosen
// zone (paged), and for an administrator: add a zone, register a device (its config file is
// shown once, to download), edit, give a new secret, decommission. Everything goes through
// /api/v1; DOM is built with loa.h (text only, never HTML); words come from #devices-config.
"use strict";
(function () {
  const configEl = document.getElementById("devices-config");
  if (!configEl) return;
  const { texts: T, is_admin: isAdmin } = JSON.parse(configEl.textContent);
  const { api, h, localTime } = window.loa;
  const $ = (id) => document.getElementById(id);
  const fmt = (text, vars) =>
    text.replace(/%\((\w+)\)[sd]/g, (m, k) => (vars && k in vars ? String(vars[k]) : m));
  const LIMIT = 50;
  const state = {
    tree: [],
    zones: new Map(), // id -> node
    selected: new URLSearchParams(location.search).get("zone") || "",
    q: "",
    page: 1,
    total: 0,
    devices: new Map(), // id -> device as listed
    configUrl: null,
  };

  // Vietnamese names to ids: "Thôn Đông 2" -> "thon-dong-2".
  function slug(text) {
    return text.replace(/[đĐ]/g, "d").normalize("NFD").replace(/[\u0300-\u036f]/g, "")
      .toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/, "");
  }

  function say(message) {
    const el = $("dev-status");
    el.textContent = message;
    el.hidden = false;
  }

  function showMessage(el, message) {
    el.textContent = message;
    el.hidden = !message;
  }

  // --- the zone tree ---------------------------------------------------------------------------

  function zoneLabel(z) {
    return z.name + " (" + (T.kinds[z.kind] || z.kind) + ")";
  }

  function zoneOptions(select, keep, filter) {
    const options = [];
    const walk = (nodes, depth) => {
      for (const z of nodes) {
        if (!filter || filter(z)) {
          options.push(h("option", { value: z.id },
            "\u00a0\u00a0".repeat(depth) + (depth ? "– " : "") + zoneLabel(z)));
        }
        walk(z.children, depth + 1);
      }
    };
    walk(state.tree, 0);
    select.replaceChildren(...options);
    if (keep && state.zones.has(keep)) select.value = keep;
  }

  function treeItem(z) {
    const button = h("button", {
      type: "button", "aria-pressed": String(z.id === state.selected),
      onclick: () => selectZone(z.id),
    }, z.name, h("small", { class: "muted" }, (T.kinds[z.kind] || z.kind) + " · " +
      fmt(T.devices_count, { n: z.devices_total })));
    const kids = z.children.length ? h("ul", {}, z.children.map(treeItem)) : null;
    return h("li", {}, button, kids);
  }

  function showTree() {
    const all = h("button", { type: "button", "aria-pressed": String(!state.selected),
      onclick: () => selectZone("") }, T.all_zones);
    const tree = $("zone-tree");
    if (!state.tree.length) {
      tree.replaceChildren(h("p", { class: "muted" }, T.no_zones));
    } else {
      tree.replaceChildren(h("ul", { class: "zone-tree" }, h("li", {}, all), state.tree.map(treeItem)));
    }
  }

  async function loadTree() {
    state.tree = await api("GET", "/zones/tree");
    state.zones.clear();
    const walk = (nodes) => nodes.forEach((z) => { state.zones.set(z.id, z); walk(z.children); });
    walk(state.tree);
    if (state.selected && !state.zones.has(state.selected)) state.selected = "";
    showTree();
    if (isAdmin) {
      zoneOptions($("dev-zone"), $("dev-zone").value || state.selected);
      updateParentChoices();
    }
  }

  function selectZone(id) {
    state.selected = id;
    state.page = 1;
    const q = new URLSearchParams(location.search);
    if (id) q.set("zone", id); else q.delete("zone");
    history.replaceState(null, "", q.toString() ? "?" + q : location.pathname);
    showTree();
    if (isAdmin && id) $("dev-zone").value = id;
    loadDevices();
  }

  // --- the devices of the chosen zone ----------------------------------------------------------

  function connection(d) {
    if (d.online) return h("span", { class: "tag ok" }, T.online);
    return [h("span", { class: "tag bad" }, T.offline),
      h("small", {}, d.last_seen_at ? localTime(d.last_seen_at) : T.never_seen)];
  }

  function location_(d) {
    if (d.latitude === null || d.longitude === null) return h("span", { class: "muted" }, T.none_location);
    return d.latitude.toFixed(5) + ", " + d.longitude.toFixed(5);
  }

  function deviceRow(d) {
    const zone = state.zones.get(d.zone_id);
    const cells = [
      h("td", {}, h("strong", {}, d.name), h("small", {}, d.id)),
      h("td", { "data-label": T.columns.zone }, zone ? zone.name : d.zone_id),
      h("td", { "data-label": T.columns.type }, T.profiles[d.profile] || d.profile),
      h("td", { "data-label": T.columns.connection }, connection(d)),
      h("td", { "data-label": T.columns.location }, location_(d)),
    ];
    if (isAdmin) {
      cells.push(h("td", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => openEdit(d),
          "aria-label": T.edit + ": " + d.name }, T.edit),
        h("button", { type: "button", class: "secondary", onclick: () => confirmSecret(d),
          "aria-label": T.new_secret + ": " + d.name }, T.new_secret),
        h("button", { type: "button", class: "danger", onclick: () => confirmDecommission(d),
          "aria-label": T.decommission + ": " + d.name }, T.decommission)));
    }
    return h("tr", { "data-id": d.id }, cells);
  }

  async function loadDevices() {
    const zone = state.zones.get(state.selected);
    $("list-zone").textContent = zone ? zone.name : T.all_zones;
    const q = new URLSearchParams({ limit: LIMIT, offset: (state.page - 1) * LIMIT });
    if (state.selected) q.set("zone", state.selected);
    if (state.q) q.set("q", state.q);
    let body;
    try {
      body = await api("GET", "/devices?" + q);
    } catch (err) {
      showMessage($("list-error"), fmt(T.load_failed, { error: err.message }));
      return;
    }
    showMessage($("list-error"), "");
    state.total = body.total;
    state.devices = new Map(body.items.map((d) => [d.id, d]));
    const colspan = isAdmin ? "6" : "5";
    $("device-rows").replaceChildren(...(body.items.length ? body.items.map(deviceRow)
      : [h("tr", {}, h("td", { colspan }, T.no_devices))]));
    const pages = Math.max(1, Math.ceil(body.total / LIMIT));
    $("list-info").textContent = fmt(T.page, { page: state.page, pages, total: body.total });
    $("list-prev").disabled = state.page <= 1;
    $("list-next").disabled = state.page >= pages;
  }

  let typing = null;
  $("list-q").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = $("list-q").value.trim(); state.page = 1; loadDevices(); }, 300);
  });
  $("list-search").addEventListener("submit", (e) => e.preventDefault());
  $("list-prev").addEventListener("click", () => { state.page -= 1; loadDevices(); });
  $("list-next").addEventListener("click", () => { state.page += 1; loadDevices(); });

  async function refresh() {
    await loadTree();
    await loadDevices();
  }

  if (!isAdmin) {
    refresh().catch((err) => showMessage($("list-error"), fmt(T.load_failed, { error: err.message })));
    return;
  }

  // --- the config file, shown once ------------------------------------------------------------

  function showConfig(deviceId, text) {
    if (state.configUrl) URL.revokeObjectURL(state.configUrl);
    state.configUrl = URL.createObjectURL(new Blob([text], { type: "application/toml" }));
    $("config-title").textContent = fmt(T.config_title, { id: deviceId });
    $("config-text").textContent = text;
    const link = $("config-download");
    link.href = state.configUrl;
    link.download = "bridge-" + deviceId + ".toml";
    $("config-panel").hidden = false;
    $("config-panel").scrollIntoView({ block: "start" });
    link.focus();
  }

  function closeConfig() {
    $("config-text").textContent = ""; // the secret leaves the page
    $("config-panel").hidden = true;
    if (state.configUrl) URL.revokeObjectURL(state.configUrl);
    state.configUrl = null;
    $("config-download").href = "#";
  }
  $("config-close").addEventListener("click", closeConfig);
  // Leaving with the secret still shown would lose it: the browser asks first.
  window.addEventListener("beforeunload", (e) => {
    if (!$("config-panel").hidden) { e.preventDefault(); e.returnValue = ""; }
  });

  // --- add a zone -----------------------------------------------------------------------------

  const zoneId = $("zone-id");
  let zoneIdTouched = false;
  zoneId.addEventListener("input", () => { zoneIdTouched = zoneId.value !== ""; });
  $("zone-name").addEventListener("input", () => {
    if (!zoneIdTouched) zoneId.value = slug($("zone-name").value);
  });

  function updateParentChoices() {
    const kind = $("zone-kind").value;
    const field = $("zone-parent-field");
    field.hidden = kind === "commune";
    if (kind === "commune") return;
    $("zone-parent-label").textContent = T.parent_for[kind];
    const parentKind = kind === "hamlet" ? "commune" : "hamlet";
    zoneOptions($("zone-parent"), $("zone-parent").value || state.selected, (z) => z.kind === parentKind);
  }
  $("zone-kind").addEventListener("change", updateParentChoices);

  $("zone-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const kind = $("zone-kind").value;
    const body = { id: zoneId.value.trim(), name: $("zone-name").value.trim(), kind };
    if (kind !== "commune") body.parent_id = $("zone-parent").value || null;
    const button = e.submitter || e.target.querySelector("button[type=submit]");
    button.disabled = true;
    showMessage($("zone-ok"), "");
    try {
      const zone = await api("POST", "/zones", body);
      showMessage($("zone-error"), "");
      $("zone-name").value = "";
      zoneId.value = "";
      zoneIdTouched = false;
      showMessage($("zone-ok"), fmt(T.zone_added, { name: zone.name }));
      await loadTree();
    } catch (err) {
      showMessage($("zone-error"), err.message);
    } finally {
      button.disabled = false;
    }
  });

  // --- register a device ----------------------------------------------------------------------

  const devId = $("dev-id");
  let devIdTouched = false;
  devId.addEventListener("input", () => { devIdTouched = devId.value !== ""; });
  $("dev-name").addEventListener("input", () => {
    if (!devIdTouched) devId.value = slug($("dev-name").value);
  });

  // An optional decimal number: null when empty, NaN when not a number.
  function number(input) {
    const text = input.value.trim().replace(",", ".");
    return text === "" ? null : Number(text);
  }

  $("device-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      id: devId.value.trim(), name: $("dev-name").value.trim(),
      profile: $("dev-profile").value, zone_id: $("dev-zone").value,
    };
    const lat = number($("dev-lat"));
    const lon = number($("dev-lon"));
    if (lat !== null) body.latitude = Number.isNaN(lat) ? $("dev-lat").value : lat;
    if (lon !== null) body.longitude = Number.isNaN(lon) ? $("dev-lon").value : lon;
    const button = e.submitter || e.target.querySelector("button[type=submit]");
    const form = e.target;
    const registered = async (device, words) => {
      showMessage($("device-error"), "");
      form.reset();
      devIdTouched = false;
      say(fmt(words, { name: device.name }));
      showConfig(device.id, device.bridge_config);
      await refresh();
    };
    button.disabled = true;
    try {
      await registered(await api("POST", "/devices", body), T.registered);
    } catch (err) {
      const error = (err.data && err.data.error) || {};
      if (error.code === "decommissioned") {
        // The id of a decommissioned device: only an explicit yes brings it back.
        showMessage($("device-error"), "");
        const when = localTime(error.decommissioned_at);
        ask(fmt(T.confirm_revive, { id: body.id, name: body.name, when }), async () => {
          await registered(await api("POST", "/devices", { ...body, revive: true }), T.revived);
        }, T.revive);
      } else {
        showMessage($("device-error"), err.message);
      }
    } finally {
      button.disabled = false;
    }
  });

  // --- edit -------------------------------------------------------------------------------------

  let editing = null;
  function openEdit(d) {
    editing = d;
    $("edit-id").textContent = d.id;
    $("edit-name").value = d.name;
    zoneOptions($("edit-zone"), d.zone_id);
    $("edit-lat").value = d.latitude === null ? "" : String(d.latitude);
    $("edit-lon").value = d.longitude === null ? "" : String(d.longitude);
    showMessage($("edit-error"), "");
    $("edit-dialog").showModal();
    $("edit-name").focus();
  }
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
  $("edit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const d = editing;
    const body = {};
    const name = $("edit-name").value.trim();
    if (name !== d.name) body.name = name;
    if ($("edit-zone").value !== d.zone_id) body.zone_id = $("edit-zone").value;
    for (const [key, input] of [["latitude", $("edit-lat")], ["longitude", $("edit-lon")]]) {
      const value = number(input);
      const given = Number.isNaN(value) ? input.value : value;
      if (given !== d[key]) body[key] = given;
    }
    if (!Object.keys(body).length) { $("edit-dialog").close(); return; }
    $("edit-save").disabled = true;
    try {
      await api("PATCH", "/devices/" + encodeURIComponent(d.id), body);
      $("edit-dialog").close();
      say(T.saved);
      await refresh();
    } catch (err) {
      showMessage($("edit-error"), err.message);
    } finally {
      $("edit-save").disabled = false;
    }
  });

  // --- confirmations: a new secret, decommissioning ------------------------------------------

  let confirmed = null;
  function ask(text, action, label) {
    confirmed = action;
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = label;
    showMessage($("confirm-error"), "");
    $("confirm-dialog").showModal();
    $("confirm-no").focus(); // the safe choice first
  }
  $("confirm-no").addEventListener("click", () => $("confirm-dialog").close());
  $("confirm-yes").addEventListener("click", async () => {
    const button = $("confirm-yes");
    button.disabled = true;
    try {
      await confirmed();
      $("confirm-dialog").close();
    } catch (err) {
      showMessage($("confirm-error"), err.message);
    } finally {
      button.disabled = false;
    }
  });

  function confirmSecret(d) {
    ask(fmt(T.confirm_secret, { name: d.name, id: d.id }), async () => {
      const result = await api("POST", "/devices/" + encodeURIComponent(d.id) + "/credentials");
      showConfig(d.id, result.bridge_config);
    }, T.new_secret);
  }

  function confirmDecommission(d) {
    ask(fmt(T.confirm_decommission, { name: d.name, id: d.id }), async () => {
      await api("DELETE", "/devices/" + encodeURIComponent(d.id));
      say(fmt(T.decommissioned, { name: d.name }));
      await refresh();
    }, T.decommission);
  }

  refresh().catch((err) => showMessage($("list-error"), fmt(T.load_failed, { error: err.message })));
})();
