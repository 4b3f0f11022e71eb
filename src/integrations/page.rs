//! The live page: one self-contained HTML document (no script, no external asset) that
//! refreshes itself, drawn from the same tree as `/tasks`.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use super::http::{policy_name, Node};
use crate::Health;

/// How often the page reloads itself, in seconds.
const REFRESH_SECONDS: u32 = 2;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#f6f7f9}\
h1{font-size:1.3rem;margin:0 0 .3rem}\
.summary{margin:0 0 1rem;padding:.5rem .8rem;border-radius:6px;display:inline-block}\
.summary.ok{background:#d9f2e1}.summary.degraded{background:#fff0c9}.summary.down{background:#ffd9d9}\
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}\
th,td{padding:.35rem .7rem;text-align:left;border-bottom:1px solid #e4e7eb;vertical-align:top}\
th{background:#eef1f4;font-weight:600}\
.badge{padding:.1rem .5rem;border-radius:999px;font-weight:600;font-size:.85em}\
.s-created .badge,.s-starting .badge{background:#dbe8ff;color:#1c4fa0}\
.s-healthy .badge{background:#d4f5dd;color:#146c2e}\
.s-failed .badge{background:#ffe7c2;color:#8a4b00}\
.s-completed .badge{background:#e6e8eb;color:#4a5563}\
.s-dead .badge{background:#ffd1d1;color:#a10d0d}\
.blocked{color:#a10d0d;font-weight:600}\
.reason{max-width:32rem;overflow-wrap:anywhere}\
.muted{color:#8593a3}";

/// The page for a supervisor of `health` whose tasks are `tree`, as seen at `now`.
/// `tasks` is the path of the JSON listing, for the page's link to it.
pub(super) fn render(health: &Health, tree: &[Node], tasks: &str, now: Instant) -> String {
    let (class, title) = if !health.is_live() {
        ("down", "not live")
    } else if !health.is_ready() {
        ("degraded", "live, not ready")
    } else {
        ("ok", "live and ready")
    };
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>task-supervisor: {title}</title><style>{STYLE}</style></head><body>\
         <h1>task-supervisor</h1>\
         <p class=\"summary {class}\" id=\"health\">{}</p>\
         <table id=\"tasks\"><thead><tr><th>task</th><th>status</th><th>policy</th>\
         <th>restarts</th><th>last failure</th><th>last beat</th><th>blocked</th></tr></thead>\
         <tbody>",
        escape(&health.to_string())
    );
    let mut rows = 0;
    rows_of(&mut html, tree, "", 0, now, &mut rows);
    if rows == 0 {
        html.push_str("<tr><td colspan=\"7\" class=\"muted\">no tasks</td></tr>");
    }
    let _ = write!(
        html,
        "</tbody></table><p class=\"muted\">{rows} tasks; this page reloads every \
         {REFRESH_SECONDS} s. JSON: <a href=\"{tasks}\">{tasks}</a></p></body></html>",
        tasks = escape(tasks)
    );
    html
}

fn rows_of(
    html: &mut String,
    nodes: &[Node],
    path: &str,
    depth: usize,
    now: Instant,
    rows: &mut usize,
) {
    for node in nodes {
        let info = &node.info;
        let full_name = format!("{path}{}", info.name);
        *rows += 1;
        let last_failure = match &info.last_failure {
            Some(failure) => format!(
                "<span class=\"reason\">{}</span> <span class=\"muted\">{} ago</span>",
                escape(&failure.reason),
                age(now.saturating_duration_since(failure.at))
            ),
            None => "<span class=\"muted\">none</span>".to_owned(),
        };
        let beat = match info.since_last_heartbeat {
            Some(since) => format!("{} ago", age(since)),
            None => "<span class=\"muted\">none</span>".to_owned(),
        };
        let blocked = match info.blocked_for {
            Some(blocked_for) => format!("<span class=\"blocked\">for {}</span>", age(blocked_for)),
            None => "<span class=\"muted\">no</span>".to_owned(),
        };
        let _ = write!(
            html,
            "<tr class=\"s-{status}\" data-task=\"{name_attr}\" data-status=\"{status}\">\
             <td style=\"padding-left:{indent}rem\">{name}</td>\
             <td><span class=\"badge\">{status}</span></td><td>{policy}</td>\
             <td>{restarts}</td><td>{last_failure}</td><td>{beat}</td><td>{blocked}</td></tr>",
            status = info.status.name(),
            name_attr = escape(&full_name),
            indent = 0.7 + 1.5 * depth as f64,
            name = escape(&info.name),
            policy = policy_name(info.policy),
            restarts = info.restarts,
        );
        if let Some(children) = &node.children {
            rows_of(
                html,
                children,
                &format!("{full_name}/"),
                depth + 1,
                now,
                rows,
            );
        }
    }
}

/// A duration as a person reads an age: `850 ms`, `12.3 s`, `4 min`, `2 h`.
fn age(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 1.0 {
        format!("{} ms", duration.as_millis())
    } else if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{} min", duration.as_secs() / 60)
    } else {
        format!("{} h", duration.as_secs() / 3600)
    }
}

/// Escapes text for an HTML element's content or a quoted attribute.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_and_errors_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn ages_read_in_the_unit_that_fits() {
        assert_eq!(age(Duration::from_millis(850)), "850 ms");
        assert_eq!(age(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(age(Duration::from_secs(250)), "4 min");
        assert_eq!(age(Duration::from_secs(7300)), "2 h");
    }
}
