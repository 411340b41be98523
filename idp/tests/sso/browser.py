"""SSO through our IdP in Debian's headless Chromium, driven by Playwright: a pysaml2 SP we
did not write asks, the browser presents the card's certificate to the login host, the
user approves the release, and the SP gets the signed, encrypted assertion.

Usage: browser.py CONFIG.json PHASE. CONFIG names sp (the SP's base URL), idp (the SSO
host's base URL), login (the login host's origin), cert and key (the card's certificate
and key, PEM), out (where screenshots, axe reports, results and the browser's state go).

PHASE first: the first login with the release page (axe-checked) and a remembered
approval; SSO again from the session (no login, no page, the original AuthnInstant);
ForceAuthn (a new login); the user's page (axe), withdrawing the approval, cancelling the
release (the SP receives the cancel status); the whole flow with JavaScript off.
PHASE revoked (after the test revoked the card): the same browser is sent to log in again
and the card is refused; IsPassive gets NoPassive at the SP.
Exits non-zero, with the reason, on the first thing that is not as it should be.
"""

import json
import sys
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect, sync_playwright

config = json.loads(Path(sys.argv[1]).read_text())
phase = sys.argv[2]
out = Path(config["out"])
out.mkdir(parents=True, exist_ok=True)
axe = Axe()
step = {"n": 0}
accessibility = {}


def shot(page, name):
    step["n"] += 1
    page.screenshot(path=str(out / f"{phase}-{step['n']:02d}-{name}.png"), full_page=True)


def check_accessibility(page, name):
    results = axe.run(page)
    found = [
        {"id": v["id"], "impact": v["impact"], "help": v["help"]}
        for v in results.response["violations"]
    ]
    accessibility[name] = found
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    if bad:
        raise SystemExit(f"accessibility: {name}: {bad}")


def context(browser, js=True, state=None):
    return browser.new_context(
        client_certificates=[
            {"origin": config["login"], "certPath": config["cert"], "keyPath": config["key"]}
        ],
        # The SP's and the login host's certificates are self-signed test certificates.
        ignore_https_errors=True,
        # axe-core is injected as a script, which the IdP's CSP (rightly) forbids.
        bypass_csp=True,
        java_script_enabled=js,
        locale="en-GB",
        storage_state=state,
    )


def result(page):
    expect(page.locator("#result")).to_be_visible(timeout=15000)
    return json.loads(page.locator("#result").inner_text())


def sp_error(page):
    expect(page.locator("#error")).to_be_visible(timeout=15000)
    return page.locator("#error").inner_text()


def first(browser):
    ctx = context(browser)
    page = ctx.new_page()
    # 1. The first login: the login host takes the card, the release page asks.
    page.goto(config["sp"] + "/login?n=1")
    expect(page.locator("h1")).to_have_text("Approve the release of your details")
    assert page.url.startswith(config["idp"] + "/saml/continue"), page.url
    table = page.locator("table").inner_text()
    for want in ("Eva Ek", "E1@5590000001", "Tessera Trial Organisation"):
        assert want in table, f"{want!r} not shown on the release page: {table}"
    check_accessibility(page, "release page")
    shot(page, "release-page")
    page.get_by_label("Remember my approval for this service").check()
    page.get_by_role("button", name="Approve and continue").click()
    got = result(page)
    shot(page, "sp-logged-in")
    (out / "first.json").write_text(json.dumps(got))

    # 2. SSO from the session: straight back, the same AuthnInstant.
    page.goto(config["sp"] + "/login?n=2")
    again = result(page)
    assert again["authn_instant"] == got["authn_instant"], (again, got)
    assert again["name_id"] == got["name_id"]
    (out / "second.json").write_text(json.dumps(again))

    # 3. ForceAuthn: a new login at the login host, a later AuthnInstant.
    visited = []
    page.on("request", lambda r: visited.append(r.url))
    page.goto(config["sp"] + "/login?n=3&force=1")
    forced = result(page)
    assert any(u.startswith(config["login"] + "/login") for u in visited), visited
    assert forced["authn_instant"][0] >= got["authn_instant"][0]
    (out / "forced.json").write_text(json.dumps(forced))

    # 4. The user's page: the remembered approval, withdrawn.
    page.goto(config["idp"] + "/my")
    expect(page.locator("h1")).to_have_text("Your login")
    check_accessibility(page, "my page")
    shot(page, "my-page")
    page.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_text("No remembered approvals.")).to_be_visible()

    # IsPassive with a session but no remembered approval: no page, NoPassive at the SP.
    page.goto(config["sp"] + "/login?n=9&passive=1")
    passive = sp_error(page)
    assert "NoPassive" in passive, passive

    # 5. Asked again, the user cancels: the SP receives the cancel status.
    page.goto(config["sp"] + "/login?n=4")
    expect(page.locator("h1")).to_have_text("Approve the release of your details")
    page.get_by_role("button", name="Cancel").click()
    error = sp_error(page)
    shot(page, "sp-cancelled")
    (out / "cancelled.txt").write_text(error)
    ctx.storage_state(path=str(out / "state.json"))

    # 6. Without JavaScript: the same flow with a button to press on the way back.
    nojs = context(browser, js=False).new_page()
    nojs.goto(config["sp"] + "/login?n=5")
    expect(nojs.locator("h1")).to_have_text("Approve the release of your details")
    nojs.get_by_role("button", name="Approve and continue").click()
    expect(nojs.locator("h1")).to_have_text("Sending you on")
    shot(nojs, "no-javascript-continue")
    nojs.get_by_role("button", name="Continue").click()
    (out / "nojs.json").write_text(json.dumps(result(nojs)))
    # Swedish for a Swedish browser.
    sv = browser.new_context(
        client_certificates=[
            {"origin": config["login"], "certPath": config["cert"], "keyPath": config["key"]}
        ],
        ignore_https_errors=True,
        locale="sv-SE",
    ).new_page()
    sv.goto(config["sp"] + "/login?n=6")
    expect(sv.locator("h1")).to_have_text("Godkänn att uppgifter lämnas ut")
    expect(sv.locator("html")).to_have_attribute("lang", "sv")
    shot(sv, "release-page-swedish")


def revoked(browser):
    ctx = context(browser, state=str(out / "state.json"))
    page = ctx.new_page()
    page.goto(config["sp"] + "/login?n=7&passive=1")
    (out / "passive.txt").write_text(sp_error(page))
    page.goto(config["sp"] + "/login?n=8")
    expect(page.locator("h1")).to_have_text("The login did not go through")
    assert page.url.startswith(config["login"] + "/login"), page.url
    text = page.locator("main").inner_text()
    assert "revoked" in text, text
    check_accessibility(page, "refusal page")
    shot(page, "card-refused")
    # The way back: the SP hears AuthnFailed.
    page.get_by_role("link", name="Back to the e-service").click()
    failed = sp_error(page)
    assert "AuthnFailed" in failed, failed
    shot(page, "sp-authn-failed")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    )
    try:
        {"first": first, "revoked": revoked}[phase](browser)
    except BaseException:
        for i, c in enumerate(browser.contexts):
            for j, pg in enumerate(c.pages):
                try:
                    pg.screenshot(path=str(out / f"failed-{phase}-{i}-{j}.png"), full_page=True)
                    print(f"--- page {i}-{j} at {pg.url} ---\n{pg.inner_text('body')[:2000]}", file=sys.stderr)
                except Exception as e:
                    print(f"--- page {i}-{j}: {e}", file=sys.stderr)
        raise
    finally:
        (out / f"accessibility-{phase}.json").write_text(json.dumps(accessibility, indent=2))
        browser.close()
