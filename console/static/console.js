// Shared helpers for the console's pages: the JSON API with the session's CSRF token,
// live updates (server-sent events), and small formatting helpers. No external library.
"use strict";
window.loa = (function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // Calls /api/v1 with the logged-in session; resolves to the JSON body (null for 204),
  // rejects with an Error whose message is the API's own (already in plain words).
  async function api(method, path, body) {
    const init = { method, headers: { "X-CSRFToken": csrf(), Accept: "application/json" },
                   credentials: "same-origin" };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch("/api/v1" + path, init);
    if (resp.status === 204) return null;
    const data = await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = new Error((data && data.error && data.error.message) || resp.statusText);
      err.status = resp.status;
      err.data = data;
      throw err;
    }
    return data;
  }

  // Uploads a FormData with progress (fetch has no upload progress): onProgress(0..1).
  function upload(path, form, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1" + path);
      xhr.setRequestHeader("X-CSRFToken", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
      xhr.onload = () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else {
          const err = new Error((data && data.error && data.error.message) || xhr.statusText);
          err.status = xhr.status;
          err.data = data;
          reject(err);
        }
      };
      xhr.onerror = () => reject(new Error(document.body.dataset.lang === "en"
        ? "The connection was lost." : "Mất kết nối."));
      xhr.send(form);
    });
  }

  // Subscribes to a server-sent event stream: handlers maps event names to functions of
  // the parsed data. The browser reconnects by itself; onState(true/false) tells the page.
  function live(url, handlers, onState) {
    const source = new EventSource(url);
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    }
    source.onopen = () => onState && onState(true);
    source.onerror = () => onState && onState(false);
    return source;
  }

  const pad = (n) => String(n).padStart(2, "0");
  // A UTC ISO time as the site's local wall clock (the browser's zone is the commune's).
  function localTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return `${pad(d.getDate())}/${pad(d.getMonth() + 1)}/${d.getFullYear()} ` +
           `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function text(el, value) { el.textContent = value; return el; }

  // Creates an element with attributes and children (strings become text, never HTML).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  return { api, upload, live, localTime, text, h, csrf };
})();
