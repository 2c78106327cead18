//! The web dashboard: static HTML, CSS and JavaScript compiled into the binary and served by
//! the API router itself, so the api function (and `flowgate serve`) serves it with nothing to
//! build, deploy or fetch from elsewhere.
//!
//! The pages are public (they hold no data); everything they show comes from the documented
//! API, called from the browser with the `x-api-key` header the person typed in, so the
//! dashboard can do exactly what that key may do and nothing more. The key is kept in the
//! tab's `sessionStorage` (gone when the tab closes), never in a cookie: with no ambient
//! credential there is nothing for another site to ride on (no CSRF).
//!
//! Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline
//! script or style, no framing), so an injected string can neither run nor load anything; the
//! scripts build the page with DOM calls and `textContent`, never from HTML strings.
//!
//! Routes: `GET /` (the page) and `GET /ui/{file}` (its assets). They are not in the OpenAPI
//! document: they are a client of the API, not part of it.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What the pages may load and run: only this origin's files; no inline script or style, no
/// plugins, no `<base>`, no framing (against clickjacking the approve button).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Where the assets are served.
pub const ASSET_PREFIX: &str = "/ui/";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The page and its assets, in the binary.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../dashboard/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../dashboard/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/app.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/dom.js"),
    },
    Asset {
        name: "graph.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/graph.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/charts.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../dashboard/favicon.svg"),
    },
];

/// Every path the dashboard serves (`/` and each file under [`ASSET_PREFIX`]): what API Gateway
/// must route to the api function (the template test checks it does).
pub fn paths() -> Vec<String> {
    std::iter::once("/".to_string())
        .chain(ASSETS.iter().map(|a| format!("{ASSET_PREFIX}{}", a.name)))
        .collect()
}

/// The dashboard's routes (state-free, so they merge into any router).
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index).fallback(crate::routes::method_not_allowed))
        .route(
            "/ui/{file}",
            get(asset).fallback(crate::routes::method_not_allowed),
        )
}

async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], ETAGS.get_or_init(etags)[0].as_str(), &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file) {
        Some(i) => serve(&ASSETS[i], ETAGS.get_or_init(etags)[i].as_str(), &headers),
        None => ApiError::not_found(
            "route_not_found",
            format!("no dashboard file {file:?}; the dashboard is at /"),
        )
        .into_response(),
    }
}

/// Each asset's entity tag (a hash of its bytes), computed once: a browser revalidates with
/// `If-None-Match` and gets a 304, so a new build's files are picked up at once (no stale
/// cache) without sending unchanged ones again.
static ETAGS: OnceLock<Vec<String>> = OnceLock::new();

fn etags() -> Vec<String> {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body.as_bytes());
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
        .collect()
}

fn serve(asset: &Asset, etag: &str, request: &HeaderMap) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    for (name, value) in [
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let index = ASSETS[0].body;
        let scripts: String = ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js"))
            .map(|a| a.body)
            .collect();
        for asset in &ASSETS[1..] {
            let path = format!("{ASSET_PREFIX}{}", asset.name);
            let relative = format!("./{}", asset.name);
            assert!(
                index.contains(&path) || scripts.contains(&relative),
                "{} is embedded but nothing loads it",
                asset.name
            );
        }
        // And the other way: every /ui/ path or module import the files name is embedded.
        for text in ASSETS.iter().map(|a| a.body) {
            for (i, _) in text.match_indices(ASSET_PREFIX) {
                let rest = &text[i + ASSET_PREFIX.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{ASSET_PREFIX}{name} is named but not embedded"
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        for asset in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".html") || a.name.ends_with(".js"))
        {
            let text = asset.body;
            // Scripts only by src, styles only from the stylesheet, no inline handlers: the
            // policy would block them, so they would only be dead code.
            for forbidden in [
                "<script>",
                "<style",
                " style=\"",
                " onclick=",
                "innerHTML",
                "eval(",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{} contains {forbidden:?}",
                    asset.name
                );
            }
        }
    }
}
