//! A small deterministic XML writer for the documents the IdP makes (metadata now, SAML
//! responses next): elements and attributes in the order written, text and attribute
//! values escaped, nothing else. PROFILES.md asks us to write our XML ourselves rather than
//! through a serialiser whose output we do not control; what it writes is parsed back by
//! libxml2 when it is signed, so a mistake here fails loudly, not silently.

/// Escapes text or an attribute value: `&`, `<`, `>`, `"`; characters XML 1.0 cannot carry
/// (controls other than tab, line feed and carriage return) are dropped, and carriage
/// returns written as a reference so that parsing gives them back.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Escapes an attribute value: as [`escape`], and tab and line feed as references too (a
/// parser turns them into spaces otherwise, and the signed document would differ from the
/// one written).
pub fn escape_attribute(s: &str) -> String {
    escape(s).replace('\t', "&#9;").replace('\n', "&#10;")
}

/// Writes one document, element by element.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
    open: Vec<&'static str>,
}

impl Writer {
    pub fn new() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            open: Vec::new(),
        }
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&escape_attribute(v));
            self.out.push('"');
        }
    }

    /// Opens `name` (closed by [`Writer::close`]).
    pub fn open(&mut self, name: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push('>');
        self.open.push(name);
        self
    }

    /// `<name attrs>text</name>`.
    pub fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start(name, attrs);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// `<name attrs/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push_str("/>");
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push('>');
        }
        self
    }

    /// The document, every element closed.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_in_order_and_escapes() {
        let mut w = Writer::new();
        w.open("a", &[("x", "1\"<&>\t\n")])
            .leaf("b", &[], "t<&>\r\u{1}é")
            .empty("c", &[("y", "")]);
        assert_eq!(
            w.finish(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a x=\"1&quot;&lt;&amp;&gt;&#9;&#10;\"><b>t&lt;&amp;&gt;&#13;é</b><c y=\"\"/></a>"
        );
    }
}
