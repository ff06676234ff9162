//! What every request goes through before a handler sees it: the `Host` check on loopback (DNS
//! rebinding), the bearer token on `/api` (compared in constant time), and the headers every
//! response carries.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::api::ApiError;

/// The token clients must send as `Authorization: Bearer TOKEN`.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// Fewest characters a token given with `--token-file` may have.
    pub const MIN_LEN: usize = 16;

    /// 32 random bytes, hex-encoded.
    pub fn random() -> std::io::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        let hex = bytes.iter().fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        });
        Ok(Self(hex.into()))
    }

    /// A token given by the user (surrounding whitespace removed). `None` when it is shorter than
    /// [`Token::MIN_LEN`] or holds characters that cannot travel in a header or a URL fragment.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (t.len() >= Self::MIN_LEN && t.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Self(t.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `header` (the whole `Authorization` value) carries this token. The comparison of
    /// the token takes the same time wherever the first difference is.
    fn accepts(&self, header: &[u8]) -> bool {
        let Some(given) = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
        else {
            return false;
        };
        bool::from(given.ct_eq(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// `/api/*`: 401 without the right token, before anything else happens.
pub(super) async fn require_token(
    State(token): State<Token>,
    request: Request,
    next: Next,
) -> Response {
    let ok = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| token.accepts(v.as_bytes()));
    if !ok {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send `Authorization: Bearer TOKEN` (the token is in the URL that `pexen serve` printed, after `#token=`)",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pexen\""),
        );
        return r;
    }
    next.run(request).await
}

/// On a loopback address: refuses requests whose `Host` is not a loopback name, so that a page
/// of another site whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing.
pub(super) async fn require_loopback_host(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("host `{host}` is not a loopback name: this server only answers requests for localhost, 127.0.0.1 or [::1]"),
        )
        .into_response();
    }
    next.run(request).await
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub(super) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((ip, tail)) if tail.is_empty() || tail.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The page is scripts and styles of this origin only, never framed; API answers are not cached.
pub(super) async fn strict_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    if api {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_and_without_ports() {
        for h in [
            "localhost",
            "localhost:7878",
            "127.0.0.1:80",
            "127.1.2.3",
            "[::1]:7878",
            "[::1]",
            "app.localhost:1",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example:7878",
            "localhost.evil.example",
            "10.0.0.1:7878",
            "[::2]:1",
            "[::1]x",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn token_only_in_a_bearer_header() {
        let t = Token::new("0123456789abcdef0123").unwrap();
        assert!(t.accepts(b"Bearer 0123456789abcdef0123"));
        assert!(!t.accepts(b"Bearer 0123456789abcdef012"));
        assert!(!t.accepts(b"Bearer 0123456789abcdef01234"));
        assert!(!t.accepts(b"Basic 0123456789abcdef0123"));
        assert!(!t.accepts(b"0123456789abcdef0123"));
        assert!(Token::new("short").is_none());
        assert!(Token::new("has a space in it, so no").is_none());
        assert_eq!(Token::random().unwrap().as_str().len(), 64);
    }
}
