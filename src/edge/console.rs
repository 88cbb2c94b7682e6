//! The web console (`web-demo/`, built by Vite into `web-demo/dist`) embedded in the binary at
//! build time, so an installed gateway serves it with no Node.js or page files at run time.
//!
//! A binary built before the page was built holds no console ([`embedded`] is false) and the
//! edge serves only its API; `[edge] web_root` serves a page from disk instead (for working on
//! the page).

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The built page's files.
#[derive(rust_embed::Embed)]
#[folder = "web-demo/dist"]
#[allow_missing = true]
struct Page;

/// True when this binary holds a console (the page was built before the binary).
pub fn embedded() -> bool {
    Page::get("index.html").is_some()
}

/// Answers `GET` of a console file: `/` is `index.html`. Vite's hashed `assets/` may be cached
/// for good; everything else is revalidated by its ETag (the file's SHA-256).
pub(super) async fn serve(uri: Uri, request: HeaderMap) -> Response {
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        path => path,
    };
    let Some(file) = Page::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut headers = HeaderMap::new();
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, file.metadata.mimetype());
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, cache);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    // The console is never framed by another site (clickjacking of its Run button).
    set(header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'");
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, file.data.into_owned()).into_response()
}
