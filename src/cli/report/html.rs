//! `report.html`: the markdown report as one self-contained page. Every plot's SVG is inlined (no network, no
//! file beside it), the headings get anchors and a navigation down the side lists the sections and their
//! experiments. The markdown stays the one source of the report's content; this only renders it.

use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use pulldown_cmark_escape::escape_html;
use std::collections::HashMap;
use std::path::Path;

/// A heading's anchor as GitHub makes it, so that a link works in both the markdown and the page: lower case,
/// letters, digits, `-` and `_` kept, spaces to `-`, the rest dropped.
pub fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The page of the markdown `md`, whose images are SVG files in `dir`.
pub fn page(md: &str, dir: &Path) -> anyhow::Result<String> {
    let mut events: Vec<Event<'_>> = Parser::new_ext(md, Options::ENABLE_TABLES).collect();
    let nav = anchor_headings(&mut events);
    let events = inline_figures(events, dir)?;
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events.into_iter());
    let title = nav.iter().find(|h| h.0 == HeadingLevel::H1).map_or("vqgrad report", |h| h.2.as_str());
    let mut html = String::with_capacity(body.len() + 8192);
    html.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    escape(&mut html, title);
    html.push_str("</title>\n<style>\n");
    html.push_str(STYLE);
    html.push_str("</style>\n</head>\n<body>\n<nav aria-label=\"sections\">\n");
    html.push_str(&navigation(&nav));
    html.push_str("</nav>\n<main>\n");
    html.push_str(&body);
    html.push_str("</main>\n</body>\n</html>\n");
    Ok(html)
}

fn escape(out: &mut String, text: &str) {
    // Writing to a String cannot fail.
    let _ = escape_html(out, text);
}

/// Gives every heading its anchor (GitHub's, numbered from the second of a name on as GitHub does) and returns
/// (level, anchor, text) for each.
fn anchor_headings(events: &mut [Event<'_>]) -> Vec<(HeadingLevel, String, String)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut headings = Vec::new();
    for i in 0..events.len() {
        let Event::Start(Tag::Heading { level, .. }) = &events[i] else { continue };
        let level = *level;
        let mut text = String::new();
        for e in &events[i + 1..] {
            match e {
                Event::End(TagEnd::Heading(_)) => break,
                Event::Text(t) | Event::Code(t) => text.push_str(t),
                _ => {}
            }
        }
        let base = slug(&text);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
        *n += 1;
        if let Event::Start(Tag::Heading { id, .. }) = &mut events[i] {
            *id = Some(CowStr::from(anchor.clone()));
        }
        headings.push((level, anchor, text));
    }
    headings
}

/// The events with every image replaced by its SVG inline, and every table in a box that scrolls sideways.
fn inline_figures<'a>(events: Vec<Event<'a>>, dir: &Path) -> anyhow::Result<Vec<Event<'a>>> {
    let mut out = Vec::with_capacity(events.len());
    let mut image: Option<(String, String)> = None; // (file, alt text) while inside an image
    for event in events {
        match (event, &mut image) {
            (Event::Start(Tag::Image { dest_url, .. }), _) => image = Some((dest_url.to_string(), String::new())),
            (Event::End(TagEnd::Image), Some((file, alt))) => {
                out.push(Event::InlineHtml(CowStr::from(figure(dir, file, alt)?)));
                image = None;
            }
            (Event::Text(t) | Event::Code(t), Some((_, alt))) => alt.push_str(&t),
            (_, Some(_)) => {}
            (Event::Start(Tag::Table(align)), None) => {
                out.push(Event::Html(CowStr::from("<div class=\"table\">\n")));
                out.push(Event::Start(Tag::Table(align)));
            }
            (Event::End(TagEnd::Table), None) => {
                out.push(Event::End(TagEnd::Table));
                out.push(Event::Html(CowStr::from("</div>\n")));
            }
            (event, None) => out.push(event),
        }
    }
    Ok(out)
}

/// The SVG of `file` (a plot the report wrote beside itself) inline, labelled with its alt text for screen readers.
fn figure(dir: &Path, file: &str, alt: &str) -> anyhow::Result<String> {
    let local = !file.contains(['/', '\\', ':']) && file.ends_with(".svg");
    if !local {
        anyhow::bail!("report.html: the image {file} is not an SVG in the report's directory");
    }
    let svg = std::fs::read_to_string(dir.join(file))
        .map_err(|e| anyhow::anyhow!("report.html: cannot inline {}: {e}", dir.join(file).display()))?;
    let start = svg.find("<svg").ok_or_else(|| anyhow::anyhow!("report.html: {file} is not an SVG"))?;
    let mut label = String::new();
    escape(&mut label, alt);
    let open = format!("<span class=\"plot\"><svg class=\"plot\" role=\"img\" aria-label=\"{label}\"");
    Ok(format!("{open}{}</span>", svg[start + 4..].trim_end()))
}

/// The side navigation: the sections (level 2) with their experiments or settings (level 3) beneath.
fn navigation(headings: &[(HeadingLevel, String, String)]) -> String {
    let mut nav = String::from("<ul>\n");
    let mut open_sub = false;
    for (level, anchor, text) in headings {
        let item = |nav: &mut String| {
            nav.push_str("<li><a href=\"#");
            nav.push_str(anchor);
            nav.push_str("\">");
            escape(nav, text);
            nav.push_str("</a>");
        };
        match level {
            HeadingLevel::H2 => {
                nav.push_str(if open_sub { "</ul></li>\n" } else { "" });
                item(&mut nav);
                nav.push_str("<ul>\n");
                open_sub = true;
            }
            HeadingLevel::H3 if open_sub => {
                item(&mut nav);
                nav.push_str("</li>\n");
            }
            _ => {}
        }
    }
    if open_sub {
        nav.push_str("</ul></li>\n");
    }
    nav.push_str("</ul>\n");
    nav.replace("<ul>\n</ul></li>", "</li>")
}

/// The page's look: a navigation fixed at the side, the text at a readable width, tables that scroll sideways,
/// and plots shown at their drawn size or smaller, never larger.
const STYLE: &str = r#"
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b; }
nav { position: fixed; top: 0; left: 0; bottom: 0; width: 17rem; overflow-y: auto; padding: 1rem;
  box-sizing: border-box; background: #f4f5f7; border-right: 1px solid #d8dbe0; font-size: 13px; }
nav ul { list-style: none; margin: 0; padding-left: 0; }
nav ul ul { padding-left: 0.9rem; margin-bottom: 0.4rem; }
nav a { color: #0b4f8a; text-decoration: none; display: block; padding: 1px 0; }
nav a:hover { text-decoration: underline; }
main { margin-left: 17rem; padding: 1rem 2rem 4rem; max-width: 72rem; }
h1 { font-size: 1.7rem; } h2 { border-bottom: 1px solid #d8dbe0; padding-bottom: 0.2rem; margin-top: 2.5rem; }
blockquote { margin: 1rem 0; padding: 0.6rem 1rem; background: #fff4ce; border-left: 4px solid #e6a700; }
div.table { overflow-x: auto; margin: 0.8rem 0; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d8dbe0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef0f3; } tr:nth-child(even) td { background: #fafbfc; }
code { background: #eef0f3; padding: 0 3px; border-radius: 3px; }
span.plot { display: inline-block; max-width: 100%; margin: 0.5rem 0; }
svg.plot { max-width: 100%; height: auto; display: block; }
@media (max-width: 900px) { nav { position: static; width: auto; border: 0; } main { margin-left: 0; } }
"#;
