// The users page (admin): list, create, change role, deactivate or reactivate, reset a
// password. Everything goes through /api/v1/users; a new password is shown once, here.
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("users-config").textContent);
  const t = config.strings;
  const roleNames = Object.fromEntries(config.roles);
  const body = document.getElementById("users-body");
  const result = document.getElementById("users-result");
  const form = document.getElementById("new-user");
  const formError = document.getElementById("new-user-error");
  const h = loa.h;
  // Column names, shown before each value when a phone stacks the table.
  const cols = [...document.querySelectorAll("#users-table thead th")].map((th) => th.textContent);

  const fill = (text, values) => text.replace(/%\((\w+)\)[sd]/g, (m, k) => String(values[k]));

  // The API's error in the reader's words where we know the case, else its own message.
  function explain(err) {
    const e = (err.data && err.data.error) || {};
    if (e.code === "exists") return t.exists;
    if (e.code === "last_admin") return t.lastAdmin;
    if (e.field === "password") return t.shortPassword;
    if (e.field === "username") return t.badUsername;
    return t.failed + " " + err.message;
  }

  function say(...children) {
    result.replaceChildren(h("p", { class: "flash ok" }, ...children));
  }

  function sayError(text) {
    result.replaceChildren(h("p", { class: "flash error", role: "alert" }, text));
  }

  // A password given once: big, selectable, with the warning that it will not come back.
  function showPassword(username, password, lead) {
    result.replaceChildren(h("div", { class: "flash ok" },
      lead ? h("p", {}, lead) : null,
      h("p", {}, fill(t.newPassword, { name: username }), " ",
        h("span", { class: "secret", "data-testid": "new-password" }, password)),
      h("p", {}, h("strong", {}, t.shownOnce))));
    result.scrollIntoView({ block: "nearest" });
  }

  function row(u) {
    const mine = u.id === config.me;
    const select = h("select", { id: `role-${u.id}`, "aria-label": `${t.role}: ${u.username}` },
      config.roles.map(([value, label]) =>
        h("option", { value, selected: value === u.role ? true : null }, label)));
    const change = h("button", { type: "button", class: "secondary", onclick: async () => {
      if (select.value === u.role) return;
      await act(() => loa.api("PATCH", `/users/${u.id}`, { role: select.value }));
    } }, t.changeRole);
    const toggle = u.active
      ? h("button", { type: "button", class: "danger", onclick: async () => {
          if (!window.confirm(fill(t.confirmDeactivate, { name: u.username }))) return;
          await act(() => loa.api("PATCH", `/users/${u.id}`, { active: false }));
        } }, t.deactivate)
      : h("button", { type: "button", class: "secondary", onclick: async () => {
          await act(() => loa.api("PATCH", `/users/${u.id}`, { active: true }));
        } }, t.reactivate);
    const reset = h("button", { type: "button", class: "secondary", onclick: async () => {
      if (!window.confirm(fill(t.confirmReset, { name: u.username }))) return;
      try {
        const out = await loa.api("POST", `/users/${u.id}/password`);
        showPassword(out.username, out.password);
      } catch (err) { sayError(explain(err)); }
    } }, t.resetPassword);
    return h("tr", { class: u.active ? null : "inactive", "data-username": u.username },
      h("td", { "data-label": cols[0] }, h("strong", {}, u.username), mine ? " " + t.you : null),
      h("td", { "data-label": cols[1] }, roleNames[u.role] || u.role),
      h("td", { "data-label": cols[2] }, h("span", { class: "tag " + (u.active ? "ok" : "bad") },
        u.active ? t.active : t.inactive)),
      h("td", { "data-label": cols[3] }, u.last_login_at ? loa.localTime(u.last_login_at) : t.never),
      h("td", {}, h("div", { class: "user-actions" },
        h("label", { class: "visually-hidden", for: `role-${u.id}` }, `${t.role}: ${u.username}`),
        select, change, toggle, reset)));
  }

  async function act(call) {
    try {
      await call();
      say(t.saved);
    } catch (err) {
      sayError(explain(err));
    }
    await load();
  }

  async function load() {
    try {
      const users = await loa.api("GET", "/users");
      body.replaceChildren(...users.map(row));
    } catch (err) {
      if (err.status === 401) { window.location.assign("/login"); return; }
      body.replaceChildren(h("tr", {}, h("td", { colspan: "5", class: "error" }, t.loadFailed)));
    }
  }

  const passwordBox = document.getElementById("nu-password-box");
  form.querySelectorAll('input[name="pw-mode"]').forEach((radio) =>
    radio.addEventListener("change", () => {
      passwordBox.hidden = form.elements["pw-mode"].value !== "set";
    }));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    const username = form.elements.username.value.trim();
    const payload = { username, role: form.elements.role.value };
    if (!username || /\s/.test(username) || username.length > 64) {
      formError.textContent = t.badUsername;
      formError.hidden = false;
      form.elements.username.focus();
      return;
    }
    if (form.elements["pw-mode"].value === "set") {
      payload.password = form.elements.password.value;
      if (payload.password.length < config.minLength) {
        formError.textContent = t.shortPassword;
        formError.hidden = false;
        form.elements.password.focus();
        return;
      }
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const out = await loa.api("POST", "/users", payload);
      const lead = fill(t.created, { name: out.username });
      if (out.password_generated) showPassword(out.username, out.password, lead);
      else say(lead);
      form.reset();
      passwordBox.hidden = true;
      await load();
    } catch (err) {
      formError.textContent = explain(err);
      formError.hidden = false;
    } finally {
      button.disabled = false;
    }
  });

  load();
})();
