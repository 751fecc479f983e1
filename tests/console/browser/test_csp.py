"""The Content-Security-Policy in a real browser: every page of the console works under it
(its scripts run, nothing is refused), and an injected inline script is refused."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.console.browser.conftest import login

PAGES = ["/", "/programme", "/audio", "/history", "/devices", "/emergency", "/account",
         "/audit", "/users"]  # fmt: skip
# Collects what the browser refused; added by the browser itself, outside the policy.
WATCH = """
window.__refused = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__refused.push(e.violatedDirective + " " + e.blockedURI));
"""


def test_every_page_runs_under_the_policy_and_inline_script_is_refused(page: Page) -> None:
    errors: list[str] = []
    exceptions: list[str] = []
    page.on("pageerror", lambda exc: exceptions.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.add_init_script(WATCH)
    login(page, "admin")
    for path in PAGES:
        page.goto(path)
        page.wait_for_load_state("load")
        assert page.evaluate("typeof window.loa") == "object", path  # console.js ran
        page.wait_for_function("document.readyState === 'complete'")
        refused = page.evaluate("window.__refused")
        assert refused == [], f"{path}: {refused}"
    # The policy is in force, not only sent: a script slipped into the page does not run.
    page.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.__ran = true"; document.body.append(s); }"""
    )
    page.wait_for_function("window.__refused.length > 0")
    assert page.evaluate("window.__ran === undefined")
    assert page.evaluate("window.__refused")[0].startswith("script-src")
    csp = [e for e in errors if "Content Security Policy" in e]
    assert len(csp) == 1, errors  # the injected one only
    assert exceptions == []  # no script failed on any page
