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


def on_failure(browser):
    """Every open page as it was when a step failed: a screenshot and its text."""
    for i, context in enumerate(browser.contexts):
        for j, page in enumerate(context.pages):
            try:
                page.screenshot(path=str(out / f"failed-{i}-{j}.png"), full_page=True)
                text = page.inner_text("main")[:2000]
                print(f"--- page {i}-{j} at {page.url} ---\n{text}", file=sys.stderr)
            except Exception as e:  # the page itself may be what broke
                print(f"--- page {i}-{j}: {e}", file=sys.stderr)


def walk(browser):
    """The walk-through; raises on the first thing not as it should be."""
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

    # ---- The life of a card, as the officers do it ----
    def signed_in(who, name):
        page = officer(browser, who).new_page()
        page.goto(f"{base}/admin/sign-in")
        page.get_by_role("button", name="Sign in with my service ID").click()
        expect(page).to_have_url(f"{base}/admin/")
        expect(page.get_by_text(name, exact=False).first).to_be_visible()
        return page

    # Hanna (HR admin) imports people: a file with a bad row is reported row by row and
    # cannot be applied; the file put right is checked, then applied.
    hanna = signed_in("hanna", "Hanna Officer")
    hanna.get_by_role("link", name="Import").click()
    shot(hanna, "import")
    check_accessibility(hanna, "import")
    hanna.locator("#file").set_input_files(config["hr_bad"])
    hanna.get_by_role("button", name="Check the file").click()
    bad = hanna.get_by_role("row").filter(has_text="W3")
    expect(bad.get_by_text("Error")).to_be_visible()
    expect(hanna.get_by_role("button", name="Apply the import")).to_have_count(0)
    shot(hanna, "import-bad-row")
    check_accessibility(hanna, "import-report")
    hanna.get_by_role("link", name="Import another file").click()
    hanna.locator("#file").set_input_files(config["hr"])
    hanna.get_by_role("button", name="Check the file").click()
    expect(hanna.get_by_role("row").filter(has_text="W1").get_by_text("New person")).to_be_visible()
    expect(hanna.get_by_text("Nothing has changed yet")).to_be_visible()
    shot(hanna, "import-checked")
    hanna.get_by_role("button", name="Apply the import").click()
    expect(hanna.get_by_text("Imported: 2 new")).to_be_visible()
    shot(hanna, "import-applied")

    # Carl (registration officer) proofs Greta in person and asks for her card.
    carl = signed_in("carl", "Carl Officer")
    carl.get_by_role("link", name="People").click()
    carl.get_by_label("Name, employee number or e-mail").fill("Greta")
    carl.get_by_role("button", name="Search").click()
    carl.get_by_role("link", name="W1").click()
    expect(carl.get_by_role("heading", name="Greta Walker")).to_be_visible()
    carl.get_by_label("Identity document").select_option("passport")
    carl.get_by_label("Document number").fill("P1234567")
    carl.get_by_label("Issuing country").fill("SE")
    carl.get_by_label("Valid until").fill("2035-06-30")
    carl.get_by_label("Personal identity number on the document").fill("19950101-1234")
    carl.get_by_label("Place of the check").fill("Service desk, Sundsvall")
    shot(carl, "proofing-form")
    check_accessibility(carl, "person-forms")
    carl.get_by_role("button", name="Record identity proofing").click()
    expect(carl.get_by_text("not proofed")).to_have_count(0)
    expect(carl.get_by_role("heading", name="Request a card")).to_be_visible()
    shot(carl, "proofed")
    carl.get_by_role("region", name="Request a card").get_by_label("Card serial number").fill("SC-100")
    carl.get_by_role("button", name="Request a card").click()
    expect(carl.locator("#card-state")).to_have_text("assigned")
    shot(carl, "card-requested")
    check_accessibility(carl, "card")

    # Frida, the second officer, sees what she approves and approves it; Carl could not.
    frida = signed_in("frida", "Frida Officer")
    frida.get_by_role("link", name="Approvals").click()
    row = frida.get_by_role("row").filter(has_text="Greta Walker")
    expect(row.get_by_text("greta@example.org")).to_be_visible()
    shot(frida, "approval-to-decide")
    row.get_by_role("button", name="Approve").click()
    expect(frida.get_by_role("row").filter(has_text="Greta Walker")).to_have_count(0)
    shot(frida, "issuance-approved")

    # Carl registers the card's key and hands the card over: it is active.
    carl.reload()
    carl.get_by_label("Certificate request (PEM)").first.fill(config["card_csr"])
    shot(carl, "keys-form")
    carl.get_by_role("button", name="Register the card's keys").click()
    expect(carl.locator("#card-state")).to_have_text("personalised")
    carl.get_by_label("Signed receipt (reference)").fill("R-100")
    carl.get_by_role("button", name="Hand over the card").click()
    expect(carl.get_by_text("The card is active")).to_be_visible()
    expect(carl.locator("#card-state")).to_have_text("active")
    shot(carl, "card-active")
    # (The hand-over's page is the answer to its POST: it shows the code once.)
    original = carl.url.removesuffix("/activation")

    # Greta forgets her card: Carl asks for a temporary card, Frida approves, Carl
    # personalises and hands it over; Greta's own card is suspended meanwhile.
    carl.get_by_role("link", name="Greta Walker").click()
    form = carl.get_by_role("region", name="Temporary card")
    form.get_by_label("Card serial number").fill("T-1")
    form.get_by_label("Days").fill("2")
    shot(carl, "temporary-form")
    # (A click right after the full-page screenshot of a page this long is lost in
    # headless Chromium now and then; the keyboard submits the same form.)
    form.get_by_role("button", name="Request a temporary card").press("Enter")
    expect(carl.locator("#card-state")).to_have_text("assigned")
    temporary = carl.url
    frida.get_by_role("link", name="Approvals").click()
    frida.get_by_role("row").filter(has_text="Greta Walker").get_by_role("button", name="Approve").click()
    expect(frida.get_by_role("row").filter(has_text="Greta Walker")).to_have_count(0)
    carl.reload()
    carl.get_by_label("Certificate request (PEM)").first.fill(config["temporary_csr"])
    carl.get_by_role("button", name="Register the card's keys").click()
    carl.get_by_label("Signed receipt (reference)").fill("R-101")
    carl.get_by_role("button", name="Hand over the card").click()
    expect(carl.locator("#card-state")).to_have_text("active")
    shot(carl, "temporary-active")
    # Greta needs it a day longer.
    carl.goto(temporary)
    carl.get_by_label("Days more").fill("1")
    carl.get_by_role("button", name="Extend").click()
    expect(carl.locator("#card-state")).to_have_text("active")
    expect(carl.get_by_text("Ends", exact=True)).to_be_visible()
    shot(carl, "temporary-extended")
    carl.goto(original)
    expect(carl.locator("#card-state")).to_contain_text("suspended (forgotten)")
    shot(carl, "original-suspended")

    # The temporary card comes back: no longer needed; the original is active again.
    carl.goto(temporary)
    carl.get_by_label("No longer needed").check()
    carl.get_by_role("button", name="Return the temporary card").click()
    expect(carl.locator("#card-state")).to_contain_text("revoked (superseded)")
    shot(carl, "temporary-returned")
    carl.goto(original)
    expect(carl.locator("#card-state")).to_have_text("active")
    shot(carl, "original-active-again")

    # ---- Passkeys ----
    # Frida registers one inside her card session (Chromium's virtual authenticator, user
    # verification on), then signs in with it from a browser without her card; Carl
    # revokes her card, and her passkey session ends and her passkey no longer signs in.
    def authenticator(page, credential=None):
        cdp = page.context.new_cdp_session(page)
        cdp.send("WebAuthn.enable", {"enableUI": False})
        made = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "ctap2Version": "ctap2_1",
                    "transport": "usb",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                    "hasMinPinLength": True,
                }
            },
        )
        if credential is not None:
            cdp.send(
                "WebAuthn.addCredential",
                {"authenticatorId": made["authenticatorId"], "credential": credential},
            )
        return cdp, made["authenticatorId"]

    frida.get_by_role("link", name="Passkeys").click()
    cdp, frida_authenticator = authenticator(frida)
    shot(frida, "passkeys")
    check_accessibility(frida, "passkeys")
    frida.get_by_label("Name of the passkey").fill("Frida's security key")
    frida.get_by_role("button", name="Add a passkey").click()
    expect(frida.get_by_role("cell", name="Frida's security key", exact=True)).to_be_visible()
    shot(frida, "passkey-registered")
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": frida_authenticator})[
        "credentials"
    ]
    if len(credentials) != 1:
        raise SystemExit(f"the authenticator holds {len(credentials)} credentials, not 1")

    # A browser without Frida's card: the passkey signs her in.
    # This browser enforces the portal's CSP (no axe injection here): the ceremony runs under
    # the real policy.
    bare = browser.new_context(ignore_https_errors=True, locale="en-GB").new_page()
    bare.goto(f"{base}/admin/sign-in")
    authenticator(bare, credentials[0])
    bare.get_by_label("Officer id").fill("frida")
    shot(bare, "passkey-sign-in")
    bare.get_by_role("button", name="Sign in with my passkey").click()
    expect(bare).to_have_url(f"{base}/admin/")
    expect(bare.get_by_text("Frida Officer", exact=False).first).to_be_visible()
    shot(bare, "passkey-signed-in")
    # No passkey begets a passkey: the page says so, and the server refuses anyway.
    bare.get_by_role("link", name="Passkeys").click()
    expect(bare.get_by_text("registered only in a session begun with your card").first).to_be_visible()
    status = bare.evaluate(
        """async () => {
             const csrf = document.querySelector('input[name=csrf]').value;
             return (await fetch('/admin/passkeys/options', {method: 'POST',
               headers: {'Content-Type': 'application/json'},
               body: JSON.stringify({csrf, label: 'another'})})).status; }"""
    )
    if status != 403:
        raise SystemExit(f"a passkey session's registration answered {status}, not 403")

    # Ivar, an administrator, signed in with a passkey: he may read, but makes no officer
    # and no API token there (a passkey session must not mint lasting access): 403.
    ivar = signed_in("ivar", "Ivar Officer")
    ivar.get_by_role("link", name="Passkeys").click()
    ivar_cdp, ivar_authenticator = authenticator(ivar)
    ivar.get_by_label("Name of the passkey").fill("Ivar's key")
    ivar.get_by_role("button", name="Add a passkey").click()
    expect(ivar.get_by_role("cell", name="Ivar's key", exact=True)).to_be_visible()
    ivar_credential = ivar_cdp.send(
        "WebAuthn.getCredentials", {"authenticatorId": ivar_authenticator}
    )["credentials"][0]
    ivar_bare = browser.new_context(ignore_https_errors=True, locale="en-GB").new_page()
    ivar_bare.goto(f"{base}/admin/sign-in")
    authenticator(ivar_bare, ivar_credential)
    ivar_bare.get_by_label("Officer id").fill("ivar")
    ivar_bare.get_by_role("button", name="Sign in with my passkey").click()
    expect(ivar_bare).to_have_url(f"{base}/admin/")
    ivar_bare.get_by_role("link", name="Officers").click()
    expect(ivar_bare.get_by_role("cell", name="Carl Officer")).to_be_visible()
    # (The page's CSP lets no script fetch: the request goes from the browser's own
    # context, with its session cookie and the page's token.)
    csrf = ivar_bare.locator("input[name=csrf]").first.get_attribute("value")
    status = ivar_bare.request.post(
        f"{base}/admin/officers/carl/tokens",
        form={"csrf": csrf, "label": "sneaky", "days": "365"},
        headers={"Origin": base},
    ).status
    if status != 403:
        raise SystemExit(f"a passkey session's token answered {status}, not 403")
    shot(ivar_bare, "passkey-session-officers")

    # Carl revokes Frida's card (lost): her passkey session ends at her next click, and
    # the passkey no longer signs her in.
    carl.get_by_role("link", name="People").click()
    carl.get_by_label("Name, employee number or e-mail").fill("Frida")
    carl.get_by_role("button", name="Search").click()
    carl.get_by_role("link", name="E3").click()
    carl.locator("a[href^='/admin/carriers/']").first.click()
    carl.get_by_label("Reason").last.select_option("lost")
    carl.get_by_label("I understand that a revocation cannot be undone").check()
    carl.get_by_role("button", name="Revoke").click()
    expect(carl.locator("#card-state")).to_contain_text("revoked")
    shot(carl, "frida-card-revoked")
    bare.get_by_role("link", name="Today").click()
    expect(bare).to_have_url(f"{base}/admin/sign-in")
    bare.get_by_label("Officer id").fill("frida")
    bare.get_by_role("button", name="Sign in with my passkey").click()
    # (Only passkeys whose card is still good are offered: none is left.)
    expect(bare.locator("[data-passkey-message]")).to_contain_text("No passkey can sign in")
    expect(bare).to_have_url(f"{base}/admin/sign-in")
    shot(bare, "passkey-refused-after-revocation")

    # Dana reads it all in the audit trail.
    dana.get_by_role("link", name="Audit trail").click()
    dana.get_by_label("Actor").fill("carl")
    dana.get_by_role("button", name="Filter").click()
    for action in ("person.proofed", "carrier.registered", "carrier.changed"):
        expect(dana.get_by_role("cell", name=action).first).to_be_visible()
    dana.get_by_label("Actor").fill("frida")
    dana.get_by_role("button", name="Filter").click()
    for action in ("portal.passkey_registered", "portal.signed_in", "portal.session_ended"):
        expect(dana.get_by_role("cell", name=action).first).to_be_visible()
    expect(dana.get_by_role("status")).to_contain_text("Chain verified")
    shot(dana, "audit-walk-through")

    # Today's page: the reconciliation (at the server's start: all agree) and the week's
    # issuance and revocation (this week: the officers' cards and Greta's two, Frida's
    # revoked and the temporary card superseded).
    dana.get_by_role("link", name="Today").click()
    expect(dana.get_by_text("Every card's state agrees with its certificates' status")).to_be_visible()
    this_week = dana.get_by_role("table", name="Certificates issued and revoked, per week").get_by_role("row").last
    expect(this_week.get_by_role("cell").nth(1)).not_to_have_text("0")
    expect(this_week.get_by_role("cell").nth(2)).not_to_have_text("0")
    shot(dana, "today-charts")
    check_accessibility(dana, "today-charts")



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
    try:
        walk(browser)
    except BaseException:
        on_failure(browser)
        raise
    browser.close()

(out / "accessibility.json").write_text(json.dumps(accessibility, indent=2))
print(f"portal walk-through in Chromium: {step} screenshots in {out}")
