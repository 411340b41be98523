//! The portal's words in Swedish and English. Every page takes its words from one
//! [`Texts`], so a page cannot show a word in only one language (the compiler checks that
//! both have every field).

/// The page's language: from `?lang=`, then the `tessera-lang` cookie, then the browser's
/// Accept-Language; Swedish if it prefers Swedish, English otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Sv,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Self::Sv => "sv",
            Self::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sv" => Some(Self::Sv),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// The first of the browser's languages we speak, by the order it gives them.
    pub fn from_accept_language(header: &str) -> Self {
        for tag in header.split(',') {
            let tag = tag
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag == "sv" || tag.starts_with("sv-") {
                return Self::Sv;
            }
            if tag == "en" || tag.starts_with("en-") {
                return Self::En;
            }
        }
        Self::En
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Self::Sv => &SV,
            Self::En => &EN,
        }
    }
}

/// Declares [`Texts`] and its two instances from one list of `field: (English, Swedish)`,
/// so that no word can be missing in either language.
macro_rules! texts {
    ($($field:ident: ($en:expr, $sv:expr $(,)?),)*) => {
        /// Every word the pages show.
        #[derive(Debug)]
        pub struct Texts {
            $(pub $field: &'static str,)*
        }

        pub(crate) static EN: Texts = Texts { $($field: $en,)* };
        pub(crate) static SV: Texts = Texts { $($field: $sv,)* };
    };
}

texts! {
    product: (
        "Tessera administration",
        "Tessera administration",
    ),
    skip_to_content: (
        "Skip to content",
        "Hoppa till innehållet",
    ),
    nav_label: (
        "Main",
        "Huvudmeny",
    ),
    dashboard: (
        "Today",
        "Idag",
    ),
    people: (
        "People",
        "Personer",
    ),
    approvals: (
        "Approvals",
        "Godkännanden",
    ),
    audit: (
        "Audit trail",
        "Granskningslogg",
    ),
    sign_out: (
        "Sign out",
        "Logga ut",
    ),
    signed_in_as: (
        "Signed in as",
        "Inloggad som",
    ),
    session_ends: (
        "session ends",
        "sessionen slutar",
    ),
    other_language: (
        "sv",
        "en",
    ),
    other_language_name: (
        "Svenska",
        "English",
    ),
    sign_in: (
        "Sign in",
        "Logga in",
    ),
    sign_in_intro: (
        "Officers sign in with their own service ID: insert your card (or use your TPM virtual card), then choose the button below. Your browser asks for the certificate and the card for its PIN.",
        "Handläggare loggar in med sitt eget tjänste-ID: sätt i kortet (eller använd ditt virtuella TPM-kort) och välj knappen nedan. Webbläsaren frågar efter certifikatet och kortet efter PIN-koden.",
    ),
    sign_in_with_card: (
        "Sign in with my service ID",
        "Logga in med mitt tjänste-ID",
    ),
    sign_in_no_certificate: (
        "Your browser sent no certificate from this issuer. Insert your card, make sure the browser uses it (OpenSC's PKCS#11 module or Tessera's), and try again.",
        "Webbläsaren skickade inget certifikat från den här utfärdaren. Sätt i kortet, se till att webbläsaren använder det (OpenSC:s eller Tesseras PKCS#11-modul) och försök igen.",
    ),
    sign_in_refused: (
        "Sign-in refused",
        "Inloggningen nekades",
    ),
    session_over: (
        "Your session has ended; sign in again.",
        "Din session har upphört; logga in igen.",
    ),
    pending_approvals: (
        "Waiting for approval",
        "Väntar på godkännande",
    ),
    none_pending: (
        "Nothing waits for approval.",
        "Inget väntar på godkännande.",
    ),
    kind: (
        "Kind",
        "Typ",
    ),
    subject: (
        "Certificates will say",
        "Certifikaten kommer att ange",
    ),
    requested_by: (
        "Requested by",
        "Begärt av",
    ),
    requested_at: (
        "Requested",
        "Begärt",
    ),
    person: (
        "Person",
        "Person",
    ),
    carrier: (
        "Card",
        "Kort",
    ),
    approve: (
        "Approve",
        "Godkänn",
    ),
    refuse: (
        "Refuse",
        "Avslå",
    ),
    not_yours_to_decide: (
        "You cannot decide this one: a second officer, not the requester nor the person concerned, must (four eyes).",
        "Du kan inte besluta om detta: en annan handläggare, varken den som begärde eller den det gäller, måste göra det (fyra ögon).",
    ),
    decided: (
        "Decision",
        "Beslut",
    ),
    search: (
        "Search",
        "Sök",
    ),
    search_label: (
        "Name, employee number or e-mail",
        "Namn, anställningsnummer eller e-post",
    ),
    search_hint: (
        "At least two characters.",
        "Minst två tecken.",
    ),
    no_people: (
        "No one matches.",
        "Ingen träff.",
    ),
    employee_number: (
        "Employee number",
        "Anställningsnummer",
    ),
    name: (
        "Name",
        "Namn",
    ),
    email: (
        "E-mail",
        "E-post",
    ),
    state: (
        "State",
        "Status",
    ),
    proofed: (
        "Identity proofed",
        "Identitet kontrollerad",
    ),
    not_proofed: (
        "not proofed",
        "inte kontrollerad",
    ),
    protected_identity: (
        "Protected identity",
        "Skyddad identitet",
    ),
    carriers: (
        "Cards",
        "Kort",
    ),
    no_carriers: (
        "No cards.",
        "Inga kort.",
    ),
    serial_number: (
        "Serial number",
        "Serienummer",
    ),
    certificates: (
        "Certificates",
        "Certifikat",
    ),
    deadline: (
        "Deadline",
        "Tidsgräns",
    ),
    suspensions_ending: (
        "Suspended cards whose deadline is within a week (then revoked)",
        "Spärrade kort vars tidsgräns infaller inom en vecka (sedan återkallas de)",
    ),
    due_back: (
        "Temporary and substitute cards due back within a week",
        "Tillfälliga kort och ersättningskort som ska återlämnas inom en vecka",
    ),
    nothing_due: (
        "None.",
        "Inga.",
    ),
    ends: (
        "Ends",
        "Slutar",
    ),
    audit_trail: (
        "Audit trail",
        "Granskningslogg",
    ),
    chain_verified: (
        "Chain verified: every record is linked to the one before it, none changed, cut or reordered",
        "Kedjan verifierad: varje post är länkad till den föregående, ingen ändrad, borttagen eller omkastad",
    ),
    chain_broken: (
        "Chain broken",
        "Kedjan bruten",
    ),
    records: (
        "records",
        "poster",
    ),
    time: (
        "Time (UTC)",
        "Tid (UTC)",
    ),
    actor: (
        "Actor",
        "Utförare",
    ),
    action: (
        "Action",
        "Händelse",
    ),
    details: (
        "Details",
        "Detaljer",
    ),
    filter: (
        "Filter",
        "Filtrera",
    ),
    newer: (
        "Newer",
        "Nyare",
    ),
    older: (
        "Older",
        "Äldre",
    ),
    done_title: (
        "Done",
        "Klart",
    ),
    done_not_refreshed: (
        "It is done, and shown only now: note it down. The page could not be read again; open it anew to see where things stand.",
        "Det är klart och visas bara nu: skriv upp det. Sidan kunde inte läsas om; öppna den på nytt för att se läget.",
    ),
    error_title: (
        "Something went wrong",
        "Något gick fel",
    ),
    server_failed: (
        "The server could not complete this request. Try again; if it keeps failing, tell the administrators (the server's log has the details).",
        "Servern kunde inte slutföra begäran. Försök igen; om det fortsätter, kontakta administratörerna (serverns logg har detaljerna).",
    ),
    back: (
        "Back",
        "Tillbaka",
    ),
    forbidden_csrf: (
        "This form had expired or did not come from this portal, so nothing was changed. Go back, reload the page and try again.",
        "Formuläret hade gått ut eller kom inte från portalen, så inget ändrades. Gå tillbaka, ladda om sidan och försök igen.",
    ),
    your_role: (
        "Role",
        "Roll",
    ),
    read_only: (
        "You can read, not change: nothing on these pages changes anything for your role.",
        "Du kan läsa men inte ändra: inget på de här sidorna ändrar något för din roll.",
    ),
    import: (
        "Import",
        "Import",
    ),
    import_title: (
        "Import people from HR",
        "Importera personer från HR",
    ),
    import_hr_only: (
        "only HR admins import people",
        "endast HR-administratörer importerar personer",
    ),
    import_intro: (
        "Upload an HR export (CSV, UTF-8, a header row). Nothing changes until you have seen the check's report row by row and chosen to apply it; a file with any bad row is not imported at all.",
        "Ladda upp en export från HR (CSV, UTF-8, en rubrikrad). Inget ändras förrän du har sett kontrollens rapport rad för rad och valt att genomföra den; en fil med någon felaktig rad importeras inte alls.",
    ),
    import_columns: (
        "Required columns:",
        "Obligatoriska kolumner:",
    ),
    import_optional: (
        "optional:",
        "valfria:",
    ),
    import_file: (
        "File",
        "Fil",
    ),
    import_at_most: (
        "at most",
        "högst",
    ),
    import_check: (
        "Check the file",
        "Kontrollera filen",
    ),
    import_no_file: (
        "Choose a file to import.",
        "Välj en fil att importera.",
    ),
    import_missing: (
        "no such import (imports are kept an hour, for the officer who uploaded them)",
        "importen finns inte (importer sparas en timme, för handläggaren som laddade upp dem)",
    ),
    import_rows: (
        "rows",
        "rader",
    ),
    import_checking: (
        "Checking",
        "Kontrollerar",
    ),
    import_importing: (
        "Importing (checked again, then written)",
        "Importerar (kontrolleras igen, sedan skrivs)",
    ),
    import_reloads: (
        "This page reloads itself every three seconds until the work is done.",
        "Sidan laddas om var tredje sekund tills arbetet är klart.",
    ),
    import_failed: (
        "The import stopped",
        "Importen avbröts",
    ),
    import_done: (
        "Imported",
        "Importerat",
    ),
    import_would: (
        "The check passed; the import would make",
        "Kontrollen godkändes; importen skulle ge",
    ),
    import_nothing_yet: (
        "Nothing has changed yet.",
        "Inget har ändrats ännu.",
    ),
    import_new: (
        "new",
        "nya",
    ),
    import_updated: (
        "updated",
        "uppdaterade",
    ),
    import_unchanged: (
        "unchanged",
        "oförändrade",
    ),
    import_apply: (
        "Apply the import",
        "Genomför importen",
    ),
    import_partial: (
        "The register changed while importing: the batches before the first bad row were imported, the rest not. Fix the rows below and import the file again (rows already imported stay unchanged).",
        "Registret ändrades under importen: satserna före den första felaktiga raden importerades, resten inte. Rätta raderna nedan och importera filen igen (redan importerade rader förblir oförändrade).",
    ),
    import_bad_rows: (
        "bad rows: nothing will be imported. Fix them in the file and upload it again.",
        "felaktiga rader: inget importeras. Rätta dem i filen och ladda upp den igen.",
    ),
    import_report: (
        "Report, row by row",
        "Rapport, rad för rad",
    ),
    import_line: (
        "Line",
        "Rad",
    ),
    import_outcome: (
        "Outcome",
        "Utfall",
    ),
    import_error: (
        "Error",
        "Fel",
    ),
    import_create: (
        "New person",
        "Ny person",
    ),
    import_update: (
        "Update",
        "Uppdatering",
    ),
    import_more: (
        "more rows are not listed here (the counts above include them).",
        "rader till visas inte här (antalen ovan räknar med dem).",
    ),
    import_another: (
        "Import another file",
        "Importera en annan fil",
    ),
    record_proofing: (
        "Record identity proofing",
        "Registrera identitetskontroll",
    ),
    record_proofing_intro: (
        "The person stands before you with an identity document valid today; type what the document shows. The check is recorded with you as the officer, the time and the place (LoA3 K5.10).",
        "Personen står framför dig med en identitetshandling som gäller idag; skriv in det handlingen visar. Kontrollen registreras med dig som handläggare, tid och plats (LoA3 K5.10).",
    ),
    document_type: (
        "Identity document",
        "Identitetshandling",
    ),
    passport: (
        "Passport",
        "Pass",
    ),
    national_id_card: (
        "National identity card",
        "Nationellt id-kort",
    ),
    drivers_licence: (
        "Driving licence",
        "Körkort",
    ),
    service_id_card: (
        "Service ID card",
        "Tjänstekort",
    ),
    document_number: (
        "Document number",
        "Handlingens nummer",
    ),
    issuing_country: (
        "Issuing country (two letters, e.g. SE)",
        "Utfärdande land (två bokstäver, t.ex. SE)",
    ),
    document_expiry: (
        "Valid until",
        "Giltig till",
    ),
    identity_number_shown: (
        "Personal identity number on the document",
        "Personnummer enligt handlingen",
    ),
    place: (
        "Place of the check",
        "Plats för kontrollen",
    ),
    request_issuance: (
        "Request a card",
        "Begär ett kort",
    ),
    request_issuance_intro: (
        "Take a blank card from stock and type its serial number; a second officer approves the issuance before keys are made.",
        "Ta ett tomt kort ur lagret och skriv in dess serienummer; en annan handläggare godkänner utfärdandet innan nycklar skapas.",
    ),
    smart_card: (
        "Smart card",
        "Smartkort",
    ),
    tpm_virtual_card: (
        "TPM virtual card",
        "Virtuellt TPM-kort",
    ),
    card_serial: (
        "Card serial number",
        "Kortets serienummer",
    ),
    terms_version: (
        "Terms the holder accepted (version)",
        "Villkor som innehavaren godkänt (version)",
    ),
    temporary_card: (
        "Temporary card",
        "Tillfälligt kort",
    ),
    temporary_card_intro: (
        "For a holder who left their card at home: their card is suspended (forgotten) when a second officer approves, until the temporary card comes back.",
        "För en innehavare som glömt sitt kort: kortet spärras (glömt) när en annan handläggare godkänner, tills det tillfälliga kortet lämnas tillbaka.",
    ),
    days: (
        "Days",
        "Dagar",
    ),
    request_temporary: (
        "Request a temporary card",
        "Begär ett tillfälligt kort",
    ),
    holder: (
        "Holder",
        "Innehavare",
    ),
    original_card: (
        "Stands in for",
        "Ersätter",
    ),
    register_keys: (
        "Register the card's keys",
        "Registrera kortets nycklar",
    ),
    register_keys_intro: (
        "The keys are generated on the card. For each key give its certificate request (PEM), or its PIV attestation and the card's attestation intermediate; the certificates are issued on hold until the hand-over.",
        "Nycklarna skapas på kortet. Ange för varje nyckel dess certifikatbegäran (PEM), eller dess PIV-attestering och kortets attesteringsintermediär; certifikaten utfärdas spärrade tills kortet lämnas ut.",
    ),
    csr_pem: (
        "Certificate request (PEM)",
        "Certifikatbegäran (PEM)",
    ),
    attestation_instead: (
        "PIV attestation instead",
        "PIV-attestering i stället",
    ),
    attestation_pem: (
        "Attestation certificate (PEM)",
        "Attesteringscertifikat (PEM)",
    ),
    intermediate_pem: (
        "Attestation intermediate (PEM)",
        "Attesteringsintermediär (PEM)",
    ),
    puk: (
        "PUK set on the card (escrowed for PIN unblock; optional)",
        "PUK som satts på kortet (förvaras för upplåsning av PIN; valfritt)",
    ),
    activate: (
        "Hand over the card",
        "Lämna ut kortet",
    ),
    receipt: (
        "Signed receipt (reference)",
        "Signerat kvitto (referens)",
    ),
    activated: (
        "The card is active: its certificates are good.",
        "Kortet är aktivt: dess certifikat gäller.",
    ),
    loss_code_intro: (
        "Write this loss-report code on the holder's receipt: with it they can report the card lost at any hour. It is shown only now.",
        "Skriv den här spärrkoden på innehavarens kvitto: med den kan kortet spärras när som helst. Den visas bara nu.",
    ),
    extend: (
        "Extend",
        "Förläng",
    ),
    days_more: (
        "Days more",
        "Fler dagar",
    ),
    give_back: (
        "Return the temporary card",
        "Lämna tillbaka det tillfälliga kortet",
    ),
    give_back_why: (
        "Why it comes back",
        "Varför det lämnas tillbaka",
    ),
    no_longer_needed: (
        "No longer needed: the holder shows their own card, which becomes active again",
        "Behövs inte längre: innehavaren visar sitt eget kort, som blir aktivt igen",
    ),
    original_lost: (
        "Their own card is lost: it is revoked",
        "Det egna kortet är förlorat: det återkallas",
    ),
    suspend: (
        "Suspend",
        "Spärra tillfälligt",
    ),
    reason: (
        "Reason",
        "Orsak",
    ),
    suspend_days: (
        "Days until it is revoked unless resumed",
        "Dagar tills det återkallas om det inte återaktiveras",
    ),
    resume: (
        "Re-activate",
        "Återaktivera",
    ),
    reverified_how: (
        "How the holder was verified again",
        "Hur innehavaren kontrollerades på nytt",
    ),
    in_person: (
        "In person, with an identity document",
        "Personligen, med identitetshandling",
    ),
    with_pin: (
        "With the card and its PIN",
        "Med kortet och dess PIN",
    ),
    revoke: (
        "Revoke",
        "Återkalla",
    ),
    revoke_confirm: (
        "I understand that a revocation cannot be undone",
        "Jag förstår att en återkallelse inte kan ångras",
    ),
    revoke_confirm_missing: (
        "Tick the box to confirm the revocation: it cannot be undone.",
        "Kryssa i rutan för att bekräfta återkallelsen: den kan inte ångras.",
    ),
    awaiting_approval: (
        "This card's request waits for a second officer's approval; its keys are registered after that.",
        "Begäran om kortet väntar på en annan handläggares godkännande; därefter registreras nycklarna.",
    ),
    tpm_enrol_hint: (
        "A TPM virtual card's keys are proven by the TPM itself: the holder's workstation enrols them with tessera-agent vsc enrol.",
        "Ett virtuellt TPM-korts nycklar intygas av TPM:en själv: innehavarens dator registrerar dem med tessera-agent vsc enrol.",
    ),
    non_resident: (
        "Without a Swedish identity number",
        "Utan svenskt personnummer",
    ),
    non_resident_hint: (
        "Give the personal identity number the document shows, or, for a document without one, the date of birth and nationality it shows.",
        "Ange personnumret som handlingen visar, eller för en handling utan personnummer det födelsedatum och den nationalitet den visar.",
    ),
    birth_date: (
        "Date of birth",
        "Födelsedatum",
    ),
    nationality: (
        "Nationality (two letters, e.g. NO)",
        "Nationalitet (två bokstäver, t.ex. NO)",
    ),
    left_at_home: (
        "Which card was left at home",
        "Vilket kort som glömts hemma",
    ),
    import_stop_updating: (
        "Stop updating",
        "Sluta uppdatera",
    ),
    import_check_progress: (
        "Check progress",
        "Visa förloppet",
    ),
    import_resume_updating: (
        "Update automatically",
        "Uppdatera automatiskt",
    ),
    import_refused_now: (
        "The register changed since the check, so nothing was imported: the rows below are refused now. Check the file again.",
        "Registret har ändrats sedan kontrollen, så inget importerades: raderna nedan nekas nu. Kontrollera filen igen.",
    ),
    passkeys: (
        "Passkeys",
        "Lösennycklar",
    ),
    passkeys_intro: (
        "A passkey lets you sign in without your card, for as long as the card you registered it with stays a good service ID: suspended or revoked, its passkeys no longer sign in. Your authenticator verifies you (PIN or biometrics) every time.",
        "En lösennyckel låter dig logga in utan ditt kort, så länge kortet du registrerade den med är ett giltigt tjänste-ID. Om kortet spärras eller återkallas slutar dess lösennycklar att fungera. Din autentiserare verifierar dig (PIN eller biometri) varje gång.",
    ),
    passkeys_none: (
        "You have no passkeys.",
        "Du har inga lösennycklar.",
    ),
    passkeys_off: (
        "Passkeys are not set up on this portal (no trusted authenticator models, or no name for the portal's address).",
        "Lösennycklar är inte inställda på den här portalen (inga betrodda autentiserarmodeller, eller inget namn för portalens adress).",
    ),
    passkeys_card_only: (
        "A passkey is registered only in a session begun with your card: sign in with your card to add one.",
        "En lösennyckel registreras bara i en session som började med ditt kort: logga in med kortet för att lägga till en.",
    ),
    passkey_add: (
        "Add a passkey",
        "Lägg till en lösennyckel",
    ),
    passkey_label: (
        "Name of the passkey",
        "Namn på lösennyckeln",
    ),
    passkey_card_certificate: (
        "Bound to card certificate",
        "Bunden till kortcertifikat",
    ),
    passkey_added: (
        "Added",
        "Tillagd",
    ),
    passkey_last_used: (
        "Last used (UTC)",
        "Senast använd (UTC)",
    ),
    passkey_remove: (
        "Remove",
        "Ta bort",
    ),
    passkey_needs_script: (
        "Passkeys need JavaScript in this browser (WebAuthn is a browser API). Signing in with your card works without it.",
        "Lösennycklar kräver JavaScript i webbläsaren (WebAuthn är ett webbläsar-API). Inloggning med kortet fungerar utan.",
    ),
    passkey_sign_in: (
        "Sign in with a passkey",
        "Logga in med en lösennyckel",
    ),
    passkey_sign_in_intro: (
        "If you registered a passkey while signed in with your card, give your officer id and use it.",
        "Om du har registrerat en lösennyckel när du var inloggad med kortet, ange ditt handläggar-id och använd den.",
    ),
    passkey_sign_in_button: (
        "Sign in with my passkey",
        "Logga in med min lösennyckel",
    ),
    officer_id: (
        "Officer id",
        "Handläggar-id",
    ),
    passkey_ceremony_expired: (
        "This passkey request has expired or was used already; try again.",
        "Begäran om lösennyckel har gått ut eller redan använts; försök igen.",
    ),
    passkey_refused: (
        "The passkey was not accepted",
        "Lösennyckeln godtogs inte",
    ),
    passkey_none: (
        "No passkey can sign in this officer.",
        "Ingen lösennyckel kan logga in den här handläggaren.",
    ),
    unblock: (
        "Unblock the PIN",
        "Lås upp PIN-koden",
    ),
    unblock_intro: (
        "For a holder whose PIN is blocked: the card's escrowed PUK is released to the card's own channel once a second officer approves. Verify the holder first.",
        "För en innehavare vars PIN-kod är spärrad: kortets förvarade PUK lämnas ut till kortets egen kanal när en annan handläggare godkänner. Kontrollera innehavaren först.",
    ),
    holder_verified_how: (
        "How you verified the holder",
        "Hur du kontrollerade innehavaren",
    ),
    video_call: (
        "On a video call, against the document and the proofing record",
        "I ett videosamtal, mot handlingen och identitetskontrollen",
    ),
    second_factor: (
        "With a second factor they already hold",
        "Med en annan faktor som innehavaren redan har",
    ),
    unblock_requested: (
        "The PIN unblock waits for a second officer's approval.",
        "Upplåsningen av PIN-koden väntar på en annan handläggares godkännande.",
    ),
    unblock_code_intro: (
        "Give the holder this release code for their card's agent (shown only now). A second officer must approve within four hours; then, with the approver's code and the card, the agent takes the PUK within a day.",
        "Ge innehavaren den här frisläppningskoden till kortets agent (visas bara nu). En annan handläggare måste godkänna inom fyra timmar; sedan hämtar agenten PUK med godkännarens kod och kortet, inom ett dygn.",
    ),
    unblock_approved: (
        "The PIN unblock is approved.",
        "Upplåsningen av PIN-koden är godkänd.",
    ),
    unblock_approver_code_intro: (
        "Give the holder this approver's release code (shown only now); with the desk's code and the card it releases the PUK.",
        "Ge innehavaren den här godkännarkoden (visas bara nu); med handläggarens kod och kortet lämnas PUK ut.",
    ),
    reconciliation: (
        "Cards and certificates reconciled",
        "Kort och certifikat stämda av",
    ),
    reconciliation_agrees: (
        "Every card's state agrees with its certificates' status",
        "Varje korts status stämmer med dess certifikats status",
    ),
    reconciliation_differs: (
        "differences between cards and their certificates: look into each (the server's log has them too)",
        "skillnader mellan kort och deras certifikat: utred varje (serverns logg har dem också)",
    ),
    reconciliation_withheld: (
        "of them concern cards of protected identities, not listed for your role",
        "av dem gäller kort för skyddade identiteter och visas inte för din roll",
    ),
    reconciliation_first: (
        "Listed here:",
        "Visas här:",
    ),
    reconciliation_not_yet: (
        "This server has not reconciled yet (it does at start and hourly).",
        "Servern har inte stämt av ännu (den gör det vid start och varje timme).",
    ),
    certificate_status: (
        "Certificate status",
        "Certifikatets status",
    ),
    chart_title: (
        "Certificates issued and revoked, per week",
        "Utfärdade och återkallade certifikat per vecka",
    ),
    chart_summary: (
        "the table below gives each week's numbers",
        "tabellen nedan ger varje veckas antal",
    ),
    chart_issued: (
        "Issued",
        "Utfärdade",
    ),
    chart_revoked: (
        "Revoked",
        "Återkallade",
    ),
    chart_week: (
        "Week from",
        "Vecka från",
    ),
    officers: (
        "Officers",
        "Handläggare",
    ),
    officers_admin_only: (
        "only administrators manage officers",
        "endast administratörer hanterar handläggare",
    ),
    officer_added: (
        "Officer added",
        "Handläggaren har lagts till",
    ),
    token_shown_once: (
        "Their API token, for the tessera CLI, is shown only now: give it to them over a channel only they read.",
        "Deras API-token, för tessera-CLI:t, visas bara nu: ge den till dem i en kanal bara de läser.",
    ),
    officer_add: (
        "Add an officer",
        "Lägg till en handläggare",
    ),
    officer_add_intro: (
        "One role per officer (separation of duties, K2.4). An officer who is also an employee names their own person record: they never act on it, and they sign in to this portal with their own service ID.",
        "En roll per handläggare (åtskillnad av uppgifter, K2.4). En handläggare som också är anställd anger sin egen personpost: de agerar aldrig på den, och loggar in i portalen med sitt eget tjänste-ID.",
    ),
    officer_person: (
        "Their own person record (id, if they are an employee)",
        "Egen personpost (id, om de är anställda)",
    ),
    disabled: (
        "disabled",
        "inaktiverad",
    ),
    enabled: (
        "enabled",
        "aktiv",
    ),
    tokens: (
        "API tokens",
        "API-tokens",
    ),
    tokens_none: (
        "No API tokens.",
        "Inga API-tokens.",
    ),
    token_made: (
        "A new API token is made.",
        "En ny API-token har skapats.",
    ),
    token_days: (
        "Days until it expires",
        "Dagar tills den går ut",
    ),
    token_make: (
        "Make an API token",
        "Skapa en API-token",
    ),
    revoked: (
        "revoked",
        "återkallad",
    ),
    officer_disable: (
        "Disable this officer",
        "Inaktivera handläggaren",
    ),
    officer_disable_confirm: (
        "I understand: their tokens are revoked and their sessions end",
        "Jag förstår: deras tokens återkallas och deras sessioner upphör",
    ),
    disable_confirm_missing: (
        "Tick the box to confirm disabling the officer.",
        "Kryssa i rutan för att bekräfta att handläggaren inaktiveras.",
    ),
    passkey_label_bad: (
        "Give the passkey a name (1 to 100 characters).",
        "Ge lösennyckeln ett namn (1 till 100 tecken).",
    ),
    token_label: (
        "Name of the token",
        "Namn på token",
    ),
    export_title: (
        "Evidence export",
        "Export av bevisning",
    ),
    export_intro: (
        "Download the audit trail as JSON lines, each record with its hash and the previous record's, to check and keep elsewhere (tessera audit export writes the same). The export is itself recorded in the trail.",
        "Ladda ner granskningsloggen som JSON-rader, varje post med sin hash och föregående posts, för att kontrollera och bevara på annat håll (tessera audit export skriver samma). Exporten registreras själv i loggen.",
    ),
    export_after: (
        "From after record number (0: all)",
        "Från efter postnummer (0: alla)",
    ),
    export_button: (
        "Download the audit trail",
        "Ladda ner granskningsloggen",
    ),
    substitute_card: (
        "Substitute card",
        "Ersättningskort",
    ),
    substitute_card_intro: (
        "A card from the substitute pool for a proofed person without a service ID of their own, for at most 90 days; authentication only. A second officer approves; at the end of the period it is revoked, then wiped and restocked.",
        "Ett kort ur ersättningspoolen för en kontrollerad person utan eget tjänste-ID, i högst 90 dagar; endast autentisering. En annan handläggare godkänner; när perioden slutar återkallas det och töms och läggs tillbaka i lager.",
    ),
    request_substitute: (
        "Request a substitute card",
        "Begär ett ersättningskort",
    ),
    end_substitute: (
        "End the substitute period",
        "Avsluta ersättningsperioden",
    ),
    end_substitute_confirm: (
        "I understand: the card's certificates are revoked now",
        "Jag förstår: kortets certifikat återkallas nu",
    ),
    end_substitute_confirm_missing: (
        "Tick the box to confirm ending the substitute period.",
        "Kryssa i rutan för att bekräfta att ersättningsperioden avslutas.",
    ),
    retire: (
        "Hand back the card",
        "Ta emot kortet",
    ),
    retire_how: (
        "What becomes of it",
        "Vad som händer med det",
    ),
    retire_restock: (
        "Wiped and back in stock (a pool card)",
        "Tömt och tillbaka i lager (ett poolkort)",
    ),
    retire_destroyed: (
        "Destroyed",
        "Förstört",
    ),
    officers_card_only: (
        "Officers and API tokens are made, and officers disabled, only in a session begun with your card: sign in with your card.",
        "Handläggare och API-tokens skapas, och handläggare inaktiveras, bara i en session som började med ditt kort: logga in med kortet.",
    ),
    officer_api_token: (
        "Also make an API token for the tessera CLI (shown to you once; an officer who signs in here with their card needs none)",
        "Skapa också en API-token för tessera-CLI:t (visas för dig en gång; en handläggare som loggar in här med sitt kort behöver ingen)",
    ),
}
