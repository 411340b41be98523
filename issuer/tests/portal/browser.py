"""The admin portal in Debian's headless Chromium, driven by Playwright, as officers use it:
each officer's browser presents the client certificate our CA issued to their card.

Usage: browser.py CONFIG.json OUT_DIR. CONFIG names the portal's base URL, each officer's
certificate and key (PEM), and the ids the walk-through needs. Screenshots of every step,
and the axe-core report of every main page, are written to OUT_DIR. Exits non-zero, with
the reason, on the first thing that is not as it should be.
"""

import json
import sys
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect, sync_playwright

config = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
base = config["base"]
axe = Axe()
step = 0
accessibility = {}


def shot(page, name):
    """A full-page screenshot of this step."""
    global step
    step += 1
    page.screenshot(path=str(out / f"{step:02d}-{name}.png"), full_page=True)


def check_accessibility(page, name):
    """axe-core on the page: no serious or critical violation."""
    results = axe.run(page)
    found = [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": len(v["nodes"])}
        for v in results.response["violations"]
    ]
    accessibility[name] = found
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    if bad:
        raise SystemExit(f"accessibility: {name}: {bad}")


def officer(browser, who):
    """A browser context that presents `who`'s card certificate to the portal."""
    return browser.new_context(
        client_certificates=[
            {
                "origin": base,
                "certPath": config[who]["cert"],
                "keyPath": config[who]["key"],
            }
        ],
        # The issuer's own TLS CA is not in this throwaway profile; what is tested here is
        # the client side of the handshake and the pages.
        ignore_https_errors=True,
        # axe-core is injected as a script, which the portal's CSP (rightly) forbids.
        bypass_csp=True,
        locale="en-GB",
    )


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )

    # Carl, a registration officer, signs in with his card.
    carl = officer(browser, "carl").new_page()
    carl.goto(f"{base}/admin/")
    expect(carl).to_have_url(f"{base}/admin/sign-in")
    shot(carl, "sign-in")
    check_accessibility(carl, "sign-in")
    carl.get_by_role("button", name="Sign in with my service ID").click()
    expect(carl).to_have_url(f"{base}/admin/")
    expect(carl.get_by_text("Carl Officer", exact=False).first).to_be_visible()
    shot(carl, "today")
    check_accessibility(carl, "today")

    # People: search, then a person's cards.
    carl.get_by_role("link", name="People").click()
    carl.get_by_label("Name, employee number or e-mail").fill("Dana")
    carl.get_by_role("button", name="Search").click()
    shot(carl, "people-search")
    check_accessibility(carl, "people")
    carl.get_by_role("link", name="E1").click()
    expect(carl.get_by_role("heading", name="Dana Officer")).to_be_visible()
    shot(carl, "person")
    check_accessibility(carl, "person")

    # Approvals: his own request shows why he cannot decide it; another's he approves.
    carl.get_by_role("link", name="Approvals").click()
    own = carl.get_by_role("row").filter(has_text=config["own_request_subject"])
    expect(own.get_by_text("You cannot decide this one")).to_be_visible()
    expect(own.get_by_role("button")).to_have_count(0)
    shot(carl, "approvals")
    check_accessibility(carl, "approvals")
    other = carl.get_by_role("row").filter(has_text=config["other_request_subject"])
    other.get_by_role("button", name="Approve").click()
    expect(carl).to_have_url(f"{base}/admin/approvals")
    expect(carl.get_by_role("row").filter(has_text=config["other_request_subject"])).to_have_count(0)
    shot(carl, "approved")

    # A forged form (no anti-forgery token) posted from the page changes nothing: 403.
    status = carl.evaluate(
        """async (id) => (await fetch(`/admin/approvals/${id}/decision`, {
               method: 'POST',
               headers: {'Content-Type': 'application/x-www-form-urlencoded'},
               body: 'decision=approve'})).status""",
        config["own_request"],
    )
    if status != 403:
        raise SystemExit(f"a form without its token answered {status}, not 403")

    # In Swedish.
    carl.get_by_role("link", name="Svenska").click()
    expect(carl.get_by_role("link", name="Godkännanden")).to_be_visible()
    expect(carl.locator("html")).to_have_attribute("lang", "sv")
    shot(carl, "approvals-sv")
    check_accessibility(carl, "approvals-sv")

    # Dana, an auditor: the audit trail, its chain verified; no control that changes
    # anything on the approvals page.
    dana = officer(browser, "dana").new_page()
    dana.goto(f"{base}/admin/sign-in")
    dana.get_by_role("button", name="Sign in with my service ID").click()
    expect(dana).to_have_url(f"{base}/admin/")
    dana.get_by_role("link", name="Approvals").click()
    expect(dana.get_by_role("button", name="Approve")).to_have_count(0)
    expect(dana.get_by_role("button", name="Refuse")).to_have_count(0)
    shot(dana, "auditor-approvals")
    dana.get_by_role("link", name="Audit trail").click()
    expect(dana.get_by_role("status")).to_contain_text("Chain verified")
    expect(dana.get_by_role("cell", name="portal.signed_in").first).to_be_visible()
    shot(dana, "audit")
    check_accessibility(dana, "audit")
    dana.get_by_label("Action").fill("approval")
    dana.get_by_role("button", name="Filter").click()
    expect(dana.get_by_role("cell", name="approval.decided").first).to_be_visible()
    shot(dana, "audit-filtered")

    # Carl signs out: the next page is the sign-in page.
    carl.get_by_role("button", name="Logga ut").click()
    expect(carl).to_have_url(f"{base}/admin/sign-in")
    carl.goto(f"{base}/admin/people")
    expect(carl).to_have_url(f"{base}/admin/sign-in")
    shot(carl, "signed-out")

    browser.close()

(out / "accessibility.json").write_text(json.dumps(accessibility, indent=2))
print(f"portal walk-through in Chromium: {step} screenshots in {out}")
