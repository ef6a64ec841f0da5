//! The web page at `/` and `/index.html`: one self-contained HTML document, assembled from the
//! files beside this one (`index.html`, `page.css`, and the scripts `core.js`, `form.js`,
//! `run.js`, `history.js`, `main.js`, in that order, as one inline script) and embedded at build
//! time: no external scripts, styles or fonts, no build step. It lists workflows, runs one
//! through a form generated from its input schema, follows the execution live (step X of Y,
//! streamed LLM text, the output), shows each node's input, output, error and logs (and a retried
//! node's or item's attempts before its last, with their errors), and keeps a filtered history
//! that refreshes itself.
//!
//! The page holds no data, so it is served without a token (the `Host` and `Origin` checks still
//! apply); every API call it makes sends the token the user pasted into it. Its inline script and
//! style carry a fresh nonce per response, and the `Content-Security-Policy` allows nothing else:
//! no other scripts, no connections but to the server itself, no framing.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The page's parts as they are in the repository.
const INDEX: &str = include_str!("index.html");
const STYLE: &str = include_str!("page.css");
const SCRIPTS: [&str; 5] = [
    include_str!("core.js"),
    include_str!("form.js"),
    include_str!("run.js"),
    include_str!("history.js"),
    include_str!("main.js"),
];

/// The page, with `__NONCE__` where each response's nonce goes.
pub static PAGE_HTML: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    INDEX
        .replace("/*STYLE*/", STYLE)
        .replace("/*SCRIPT*/", &SCRIPTS.join("\n"))
});

const NONCE_PLACEHOLDER: &str = "__NONCE__";

/// Is `path` one of the page's paths (served without a token)?
pub fn is_page_path(path: &str) -> bool {
    matches!(path, "/" | "/index.html")
}

/// The `Content-Security-Policy` for a response with this nonce.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// `GET /`, `GET /index.html`.
pub async fn page() -> Response {
    let bytes: [u8; 16] = rand::random();
    let nonce: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let body = PAGE_HTML.replace(NONCE_PLACEHOLDER, &nonce);
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_nonce_slots_and_no_external_resources() {
        let page: &str = &PAGE_HTML;
        assert!(page.matches(NONCE_PLACEHOLDER).count() >= 2);
        for bad in [
            "src=\"http",
            "href=\"http",
            "innerHTML",
            "@import",
            "url(http",
            "</script>\n<script",
        ] {
            assert!(!page.contains(bad), "the page contains {bad}");
        }
        assert_eq!(page.matches("<script").count(), 1, "one inline script");
        assert!(!page.contains("/*SCRIPT*/") && !page.contains("/*STYLE*/"));
        assert!(is_page_path("/") && is_page_path("/index.html"));
        assert!(!is_page_path("/api") && !is_page_path("/index.htm"));
    }
}
