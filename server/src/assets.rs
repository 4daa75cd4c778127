//! The web console's files, embedded from `web/dist` at build time.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use crate::http::Shared;

#[derive(RustEmbed)]
#[folder = "../web/dist/"]
#[exclude = ".gitignore"]
struct Dist;

/// Shown when the console was not built (`cargo build` without Node); both languages, since
/// the i18n bundle is part of what is missing.
const NOT_BUILT: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tokenboard</title></head>\
<body><h1>Tokenboard</h1><p>The web console is not built into this binary. Run <code>scripts/run.sh</code>, \
which builds it with npm.</p><p>此二进制文件未包含 Web 控制台。请运行 <code>scripts/run.sh</code>（会用 npm 构建控制台）。</p>\
<p>The API is available: <a href=\"/healthz\">/healthz</a>.</p></body></html>";

fn file(path: &str) -> Response {
    let path = path.trim_start_matches('/');
    let (name, asset) = match Dist::get(path) {
        Some(a) if !path.is_empty() => (path, a),
        // Client-side routes fall back to the page itself.
        _ => match Dist::get("index.html") {
            Some(a) => ("index.html", a),
            None => return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], NOT_BUILT).into_response(),
        },
    };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let cache = if name.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    (StatusCode::OK, [(header::CONTENT_TYPE, mime.as_ref().to_string()), (header::CACHE_CONTROL, cache.to_string())], asset.data.into_owned()).into_response()
}

pub fn router(base: &str) -> Router<Shared> {
    let base = base.trim_end_matches('/').to_string();
    let slash = format!("{base}/");
    Router::new()
        // Asset paths in the page are relative: the page must be served under a trailing slash.
        .route(&base, get(move || async move { axum::response::Redirect::permanent(&slash) }))
        .route(&format!("{base}/"), get(|| async { file("index.html") }))
        .route(&format!("{base}/{{*path}}"), get(|Path(p): Path<String>| async move { file(&p) }))
}
