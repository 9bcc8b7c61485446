//! Constructors for what a hook returns.

use crate::{Decision, Fault, Header, HeaderEdit, ResponseSpec};

impl Decision {
    /// Continue unchanged.
    pub fn proceed() -> Self {
        Decision::Continue(Vec::new())
    }
    /// Continue after applying `edits` to the current message.
    pub fn edit(edits: Vec<HeaderEdit>) -> Self {
        Decision::Continue(edits)
    }
    /// Refuse with `fault` (rendered as `application/problem+json`).
    pub fn deny(fault: Fault) -> Self {
        Decision::Deny(fault)
    }
    /// Send `response` as it is.
    pub fn respond(response: ResponseSpec) -> Self {
        Decision::Respond(response)
    }
    /// Whether this is a `Continue`.
    pub fn is_continue(&self) -> bool {
        matches!(self, Decision::Continue(_))
    }
}

impl Header {
    /// A header; the name is lower-cased.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into().to_ascii_lowercase(),
            value: value.into(),
        }
    }
}

impl HeaderEdit {
    /// Replace every value of `name`.
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> Self {
        HeaderEdit::Set(Header::new(name, value))
    }
    /// Add a value after existing ones.
    pub fn append(name: impl Into<String>, value: impl Into<String>) -> Self {
        HeaderEdit::Append(Header::new(name, value))
    }
    /// Remove every value of `name`.
    pub fn remove(name: impl Into<String>) -> Self {
        HeaderEdit::Remove(name.into().to_ascii_lowercase())
    }
}

impl Fault {
    /// A fault with a stable `code` (`policy.<name>.<reason>`), a fixed
    /// `title` and a per-request `detail`.
    pub fn new(
        status: u16,
        code: impl Into<String>,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Fault {
            status,
            code: code.into(),
            title: title.into(),
            detail: detail.into(),
            headers: Vec::new(),
        }
    }
    /// Adds a response header to the fault (e.g. `retry-after`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
}

impl ResponseSpec {
    /// A response with a status and no headers or body.
    pub fn new(status: u16) -> Self {
        ResponseSpec {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}
