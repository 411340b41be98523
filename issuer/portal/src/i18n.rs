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

/// Every word the pages show.
#[derive(Debug)]
pub struct Texts {
    pub product: &'static str,
    pub skip_to_content: &'static str,
    pub nav_label: &'static str,
    pub dashboard: &'static str,
    pub people: &'static str,
    pub approvals: &'static str,
    pub audit: &'static str,
    pub sign_out: &'static str,
    pub signed_in_as: &'static str,
    pub session_ends: &'static str,
    pub other_language: &'static str,
    pub other_language_name: &'static str,
    pub sign_in: &'static str,
    pub sign_in_intro: &'static str,
    pub sign_in_with_card: &'static str,
    pub sign_in_no_certificate: &'static str,
    pub sign_in_refused: &'static str,
    pub session_over: &'static str,
    pub pending_approvals: &'static str,
    pub none_pending: &'static str,
    pub kind: &'static str,
    pub subject: &'static str,
    pub requested_by: &'static str,
    pub requested_at: &'static str,
    pub person: &'static str,
    pub carrier: &'static str,
    pub approve: &'static str,
    pub refuse: &'static str,
    pub not_yours_to_decide: &'static str,
    pub decided: &'static str,
    pub search: &'static str,
    pub search_label: &'static str,
    pub search_hint: &'static str,
    pub no_people: &'static str,
    pub employee_number: &'static str,
    pub name: &'static str,
    pub email: &'static str,
    pub state: &'static str,
    pub proofed: &'static str,
    pub not_proofed: &'static str,
    pub protected_identity: &'static str,
    pub carriers: &'static str,
    pub no_carriers: &'static str,
    pub serial_number: &'static str,
    pub certificates: &'static str,
    pub deadline: &'static str,
    pub suspensions_ending: &'static str,
    pub due_back: &'static str,
    pub nothing_due: &'static str,
    pub ends: &'static str,
    pub audit_trail: &'static str,
    pub chain_verified: &'static str,
    pub chain_broken: &'static str,
    pub records: &'static str,
    pub time: &'static str,
    pub actor: &'static str,
    pub action: &'static str,
    pub details: &'static str,
    pub filter: &'static str,
    pub newer: &'static str,
    pub older: &'static str,
    pub error_title: &'static str,
    pub server_failed: &'static str,
    pub back: &'static str,
    pub forbidden_csrf: &'static str,
    pub your_role: &'static str,
    pub read_only: &'static str,
}

pub(crate) static EN: Texts = Texts {
    product: "Tessera administration",
    skip_to_content: "Skip to content",
    nav_label: "Main",
    dashboard: "Today",
    people: "People",
    approvals: "Approvals",
    audit: "Audit trail",
    sign_out: "Sign out",
    signed_in_as: "Signed in as",
    session_ends: "session ends",
    other_language: "sv",
    other_language_name: "Svenska",
    sign_in: "Sign in",
    sign_in_intro: "Officers sign in with their own service ID: insert your card (or use your TPM virtual card), then choose the button below. Your browser asks for the certificate and the card for its PIN.",
    sign_in_with_card: "Sign in with my service ID",
    sign_in_no_certificate: "Your browser sent no certificate from this issuer. Insert your card, make sure the browser uses it (OpenSC's PKCS#11 module or Tessera's), and try again.",
    sign_in_refused: "Sign-in refused",
    session_over: "Your session has ended; sign in again.",
    pending_approvals: "Waiting for approval",
    none_pending: "Nothing waits for approval.",
    kind: "Kind",
    subject: "Certificates will say",
    requested_by: "Requested by",
    requested_at: "Requested",
    person: "Person",
    carrier: "Card",
    approve: "Approve",
    refuse: "Refuse",
    not_yours_to_decide: "You cannot decide this one: a second officer, not the requester nor the person concerned, must (four eyes).",
    decided: "Decision",
    search: "Search",
    search_label: "Name, employee number or e-mail",
    search_hint: "At least two characters.",
    no_people: "No one matches.",
    employee_number: "Employee number",
    name: "Name",
    email: "E-mail",
    state: "State",
    proofed: "Identity proofed",
    not_proofed: "not proofed",
    protected_identity: "Protected identity",
    carriers: "Cards",
    no_carriers: "No cards.",
    serial_number: "Serial number",
    certificates: "Certificates",
    deadline: "Deadline",
    suspensions_ending: "Suspended cards whose deadline is within a week (then revoked)",
    due_back: "Temporary and substitute cards due back within a week",
    nothing_due: "None.",
    ends: "Ends",
    audit_trail: "Audit trail",
    chain_verified: "Chain verified: every record is linked to the one before it, none changed, cut or reordered",
    chain_broken: "Chain broken",
    records: "records",
    time: "Time (UTC)",
    actor: "Actor",
    action: "Action",
    details: "Details",
    filter: "Filter",
    newer: "Newer",
    older: "Older",
    error_title: "Something went wrong",
    server_failed: "The server could not complete this request. Try again; if it keeps failing, tell the administrators (the server's log has the details).",
    back: "Back",
    forbidden_csrf: "This form had expired or did not come from this portal, so nothing was changed. Go back, reload the page and try again.",
    your_role: "Role",
    read_only: "You can read, not change: nothing on these pages changes anything for your role.",
};

pub(crate) static SV: Texts = Texts {
    product: "Tessera administration",
    skip_to_content: "Hoppa till innehållet",
    nav_label: "Huvudmeny",
    dashboard: "Idag",
    people: "Personer",
    approvals: "Godkännanden",
    audit: "Granskningslogg",
    sign_out: "Logga ut",
    signed_in_as: "Inloggad som",
    session_ends: "sessionen slutar",
    other_language: "en",
    other_language_name: "English",
    sign_in: "Logga in",
    sign_in_intro: "Handläggare loggar in med sitt eget tjänste-ID: sätt i kortet (eller använd ditt virtuella TPM-kort) och välj knappen nedan. Webbläsaren frågar efter certifikatet och kortet efter PIN-koden.",
    sign_in_with_card: "Logga in med mitt tjänste-ID",
    sign_in_no_certificate: "Webbläsaren skickade inget certifikat från den här utfärdaren. Sätt i kortet, se till att webbläsaren använder det (OpenSC:s eller Tesseras PKCS#11-modul) och försök igen.",
    sign_in_refused: "Inloggningen nekades",
    session_over: "Din session har upphört; logga in igen.",
    pending_approvals: "Väntar på godkännande",
    none_pending: "Inget väntar på godkännande.",
    kind: "Typ",
    subject: "Certifikaten kommer att ange",
    requested_by: "Begärt av",
    requested_at: "Begärt",
    person: "Person",
    carrier: "Kort",
    approve: "Godkänn",
    refuse: "Avslå",
    not_yours_to_decide: "Du kan inte besluta om detta: en annan handläggare, varken den som begärde eller den det gäller, måste göra det (fyra ögon).",
    decided: "Beslut",
    search: "Sök",
    search_label: "Namn, anställningsnummer eller e-post",
    search_hint: "Minst två tecken.",
    no_people: "Ingen träff.",
    employee_number: "Anställningsnummer",
    name: "Namn",
    email: "E-post",
    state: "Status",
    proofed: "Identitet kontrollerad",
    not_proofed: "inte kontrollerad",
    protected_identity: "Skyddad identitet",
    carriers: "Kort",
    no_carriers: "Inga kort.",
    serial_number: "Serienummer",
    certificates: "Certifikat",
    deadline: "Tidsgräns",
    suspensions_ending: "Spärrade kort vars tidsgräns infaller inom en vecka (sedan återkallas de)",
    due_back: "Tillfälliga kort och ersättningskort som ska återlämnas inom en vecka",
    nothing_due: "Inga.",
    ends: "Slutar",
    audit_trail: "Granskningslogg",
    chain_verified: "Kedjan verifierad: varje post är länkad till den föregående, ingen ändrad, borttagen eller omkastad",
    chain_broken: "Kedjan bruten",
    records: "poster",
    time: "Tid (UTC)",
    actor: "Utförare",
    action: "Händelse",
    details: "Detaljer",
    filter: "Filtrera",
    newer: "Nyare",
    older: "Äldre",
    error_title: "Något gick fel",
    server_failed: "Servern kunde inte slutföra begäran. Försök igen; om det fortsätter, kontakta administratörerna (serverns logg har detaljerna).",
    back: "Tillbaka",
    forbidden_csrf: "Formuläret hade gått ut eller kom inte från portalen, så inget ändrades. Gå tillbaka, ladda om sidan och försök igen.",
    your_role: "Roll",
    read_only: "Du kan läsa men inte ändra: inget på de här sidorna ändrar något för din roll.",
};
