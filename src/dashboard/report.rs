//! The run report (`drover run --report FILE`): the dashboard's page with its script,
//! its styles and the run's data inlined into one HTML file, which opens from disk
//! with no network (the page sees `window.DROVER_REPORT` and makes no request).

use serde::Serialize;

use super::snapshot::Page;
use super::stream::Window;
use super::{APP_CSS, APP_JS, INDEX};

#[derive(Serialize)]
struct Report<'a> {
    snapshot: &'a Page<'a>,
    stream: &'a Window,
    workload: Option<&'a str>,
    summary: Option<&'a serde_json::Value>,
}

/// JSON safe inside a `<script>` element.
fn script_safe(json: &str) -> String {
    json.replace("</", "<\\/")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The page with everything inlined.
pub fn html(snapshot: &Page, stream: &Window, workload: Option<&str>, summary: Option<&serde_json::Value>) -> String {
    let data = serde_json::to_string(&Report {
        snapshot,
        stream,
        workload,
        summary,
    })
    .unwrap_or_else(|_| "{}".into());
    let css = format!("<style>\n{}\n</style>", APP_CSS.replace("</style", "<\\/style"));
    let js = format!(
        "<script>window.DROVER_REPORT = {};</script>\n<script>\n{}\n</script>",
        script_safe(&data),
        APP_JS.replace("</script", "<\\/script")
    );
    let mut page = String::with_capacity(INDEX.len() + css.len() + js.len());
    let mut rest = INDEX;
    let mut placed_css = false;
    let mut placed_js = false;
    // Swap the external stylesheet and script for their inlined forms.
    while let Some(i) = rest.find('<') {
        page.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find('>').map_or(tail.len(), |e| e + 1);
        let tag = &tail[..end];
        if tag.starts_with("<link") && tag.contains("app.css") {
            page.push_str(&css);
            placed_css = true;
            rest = &tail[end..];
        } else if tag.starts_with("<script") && tag.contains("app.js") {
            page.push_str(&js);
            placed_js = true;
            let close = tail.find("</script>").map_or(end, |c| c + "</script>".len());
            rest = &tail[close..];
        } else {
            page.push_str(tag);
            rest = &tail[end..];
        }
    }
    page.push_str(rest);
    if !placed_css {
        page = page.replacen("</head>", &format!("{css}</head>"), 1);
    }
    if !placed_js {
        page = page.replacen("</body>", &format!("{js}</body>"), 1);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_inlines_everything_and_fetches_nothing() {
        let mut snap = crate::dashboard::snapshot::Snapshot::default();
        snap.server.host = "</script><b>".into();
        let page = html(
            &Page {
                snap: &snap,
                history: vec![],
                history_delta: false,
            },
            &Window {
                now: 1.0,
                bars: vec![],
                total: 0,
                thinned: false,
                next: 0,
            },
            Some("x = 1"),
            None,
        );
        assert!(page.contains("window.DROVER_REPORT = {"));
        assert!(!page.contains("src=\"/app.js\"") && !page.contains("href=\"/app.css\""));
        assert!(!page.contains("\"</script><b>\""), "data cannot close the script element");
        assert!(page.contains("<style>"));
    }
}
