//! The demo pages and the JS helper, embedded in the binary: no files to
//! deploy, no build step.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

macro_rules! page {
    ($name:ident, $file:literal, $type:literal) => {
        /// Serves the embedded file.
        pub async fn $name() -> Response {
            serve(include_str!(concat!("../../../../web/", $file)), $type)
        }
    };
}

page!(index, "index.html", "text/html; charset=utf-8");
page!(upload, "upload.html", "text/html; charset=utf-8");
page!(chat, "chat.html", "text/html; charset=utf-8");
page!(live, "live.html", "text/html; charset=utf-8");
page!(helper, "ssehub.js", "text/javascript; charset=utf-8");
page!(
    helper_module,
    "ssehub.mjs",
    "text/javascript; charset=utf-8"
);
page!(
    helper_types,
    "ssehub.d.mts",
    "application/typescript; charset=utf-8"
);
page!(style, "style.css", "text/css; charset=utf-8");
// (Browsers ask for /favicon.ico whatever the page says; both are the SVG.)
page!(icon, "favicon.svg", "image/svg+xml");

fn serve(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    if content_type.starts_with("text/javascript")
        || content_type.starts_with("application/typescript")
    {
        // The helper is public code: any page may load it, also as an ES
        // module (fetched with CORS). What it connects to stays guarded.
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small, and changed with every release: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
