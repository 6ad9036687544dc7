//! The web console: a few static files (HTML, CSS, JavaScript modules)
//! compiled into the binary and served at `/` without the API token (they
//! hold no data and no secret; the page asks for the token and sends it as
//! `Authorization: Bearer …` on every API call it makes). No framework, no
//! build step: `api/assets/console/` is what the browser gets.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Every asset: name under `/console/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../assets/console/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/console/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/api.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/live.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/views.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../assets/console/icon.svg"),
    ),
];

/// What the page may load and talk to: itself only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes (served outside the token check).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(|| async { asset("index.html") })).route(
        "/console/{name}",
        get(|Path(name): Path<String>| async move { asset(&name) }),
    )
}

fn asset(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let mut response = (StatusCode::OK, *body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let index = ASSETS[0].2;
        for (name, _, _) in &ASSETS[1..] {
            let js_import = ASSETS.iter().any(|(_, _, body)| body.contains(&format!("./{name}")));
            assert!(
                index.contains(&format!("/console/{name}")) || js_import,
                "{name} is served but nothing loads it"
            );
        }
        assert!(asset("../Cargo.toml").status() == StatusCode::NOT_FOUND);
    }
}
