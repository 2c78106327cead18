//! The dashboard's files through the API router: served without a key (they hold no data),
//! with their content types, the strict Content-Security-Policy and the other protective
//! headers, revalidated by ETag, and unknown files answered like any unknown route.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use support::TestApi;
use tower::ServiceExt;

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

async fn get(api: &TestApi, path: &str, etag: Option<&str>) -> Page {
    let mut req = Request::get(path);
    if let Some(tag) = etag {
        req = req.header(header::IF_NONE_MATCH, tag);
    }
    let res = api
        .app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Page {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).expect("UTF-8"),
    }
}

fn header_of(page: &Page, name: header::HeaderName) -> &str {
    page.headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ASCII")
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_without_a_key_under_a_strict_policy() {
    let api = TestApi::start().await;
    for (path, content_type, marker) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<script type=\"module\" src=\"/ui/app.js\">",
        ),
        (
            "/ui/index.html",
            "text/html; charset=utf-8",
            "id=\"key-form\"",
        ),
        ("/ui/app.js", "text/javascript; charset=utf-8", "x-api-key"),
        (
            "/ui/graph.js",
            "text/javascript; charset=utf-8",
            "export function drawGraph",
        ),
        (
            "/ui/charts.js",
            "text/javascript; charset=utf-8",
            "export function barChart",
        ),
        (
            "/ui/dom.js",
            "text/javascript; charset=utf-8",
            "export function h(",
        ),
        ("/ui/app.css", "text/css; charset=utf-8", ":focus-visible"),
        ("/ui/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let page = get(&api, path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(
            header_of(&page, header::CONTENT_TYPE),
            content_type,
            "{path}"
        );
        assert!(page.text.contains(marker), "{path} lacks {marker:?}");
        let csp = header_of(&page, header::CONTENT_SECURITY_POLICY);
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header_of(&page, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header_of(&page, header::X_FRAME_OPTIONS), "DENY");
        assert_eq!(header_of(&page, header::REFERRER_POLICY), "no-referrer");

        // The browser revalidates: the same tag gets 304 and no body, another gets the file.
        let etag = header_of(&page, header::ETAG).to_string();
        let again = get(&api, path, Some(&etag)).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.text.is_empty());
        let stale = get(&api, path, Some("\"something-else\"")).await;
        assert_eq!(stale.status, StatusCode::OK, "{path}");
    }
    // Nothing is fetched from elsewhere: no absolute URL in the page or its scripts, apart from
    // the SVG namespace (an identifier, never loaded).
    for path in [
        "/",
        "/ui/app.js",
        "/ui/dom.js",
        "/ui/graph.js",
        "/ui/charts.js",
        "/ui/app.css",
    ] {
        let text = get(&api, path, None).await.text;
        let outside: Vec<&str> = text
            .match_indices("http")
            .map(|(i, _)| &text[i..(i + 40).min(text.len())])
            .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(outside.is_empty(), "{path} names {outside:?}");
    }
}

#[tokio::test]
async fn unknown_files_and_methods_get_the_api_error_shape() {
    let api = TestApi::start().await;
    let missing = api
        .send(Request::get("/ui/secret.env").body(Body::empty()).unwrap())
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "route_not_found");
    for path in ["/ui/../Cargo.toml", "/ui/%2e%2e%2fCargo.toml"] {
        let answer = api
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    let post = api
        .send(Request::post("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.code(), "method_not_allowed");
    // The data is not public: the API behind the page still wants the key.
    let runs = api
        .send(Request::get("/v1/runs").body(Body::empty()).unwrap())
        .await;
    assert_eq!(runs.status, StatusCode::UNAUTHORIZED);
}
