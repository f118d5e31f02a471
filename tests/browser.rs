//! `report.html` in a real browser: a small `reproduce` writes its report, and headless Chromium opens the page.
//! It must load without a console message, render a screenshot that is not blank, and show every plot and table
//! of the markdown report at a size above zero. The page must also stand alone: no script, no stylesheet link,
//! no image file, nothing fetched.
//!
//! Without a Chromium on the machine the test prints why and passes, unless `VQGRAD_REQUIRE_BROWSER=1` (set by
//! `.ci/run`, which installs Debian's `chromium`), when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vqgrad-browser-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The browser: `VQGRAD_CHROMIUM`, else the first of Chromium's and Chrome's usual names on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VQGRAD_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs the browser headless on `page` with `args`; returns stdout and the console messages from its log.
fn browse(browser: &Path, page: &Path, args: &[&str]) -> (String, Vec<String>) {
    let profile = page.with_file_name("chromium-profile");
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("the browser starts");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} exited with {}:\n{log}", browser.display(), out.status);
    let console = log.lines().filter(|l| l.contains(":CONSOLE")).map(String::from).collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The number of plots (images) and tables in the markdown report.
fn expected(md: &str) -> (usize, usize) {
    let plots = md.matches("![").count();
    let tables = md.lines().filter(|l| l.starts_with("|---")).count();
    (plots, tables)
}

#[test]
fn report_html_renders_in_a_browser() {
    let Some(browser) = chromium() else {
        let required = std::env::var("VQGRAD_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(!required, "VQGRAD_REQUIRE_BROWSER=1 but no chromium on the PATH (or VQGRAD_CHROMIUM)");
        eprintln!("skipped: no chromium on the PATH (install Debian's chromium, or set VQGRAD_CHROMIUM)");
        return;
    };
    let dir = scratch("reproduce");
    let o = Command::new(env!("CARGO_BIN_EXE_vqgrad"))
        .args(["reproduce", "--quick", "--out", dir.to_str().unwrap(), "--quiet", "--cpu"])
        .args(["--set", "steps=10", "--set", "eval-every=5", "--set", "n-train=256", "--set", "n-eval=64"])
        .args(["--set", "batch=32", "--set", "seed=0,1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = dir.join("report");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    let (plots, tables) = expected(&std::fs::read_to_string(report.join("report.md")).unwrap());
    assert!(plots > 40 && tables > 40, "{plots} plots and {tables} tables in the markdown");
    // Self-contained: nothing to fetch, no script; links only within the page.
    for banned in ["<script", "<link", "<img", "src=", "url(", "@import"] {
        assert!(!html.contains(banned), "report.html holds `{banned}`");
    }
    assert!(html.match_indices("href=\"").all(|(i, _)| html[i + 6..].starts_with('#')), "a link out of the page");
    assert_eq!(html.matches("<svg class=\"plot\"").count(), plots, "every plot inline");

    // The screenshot of the first screen is not blank: many pixels are not the background, in several colours.
    let shot = dir.join("first-screen.png");
    let (_, console) = browse(
        &browser,
        &report.join("report.html"),
        &["--window-size=1280,900", &format!("--screenshot={}", shot.display())],
    );
    assert!(console.is_empty(), "console messages: {console:#?}");
    let pixmap = resvg::tiny_skia::Pixmap::load_png(&shot).expect("a PNG screenshot");
    let pixels: Vec<[u8; 4]> = pixmap.pixels().iter().map(|p| [p.red(), p.green(), p.blue(), p.alpha()]).collect();
    let inked = pixels.iter().filter(|p| p[..3].iter().any(|&c| c < 200)).count();
    let colours: std::collections::HashSet<[u8; 4]> = pixels.iter().copied().collect();
    assert!(inked * 50 > pixels.len(), "the screenshot is nearly blank: {inked} of {} pixels inked", pixels.len());
    assert!(colours.len() > 20, "the screenshot has {} colours", colours.len());

    // Every plot and table is in the rendered page with a size above zero: a copy of the page with a probe that
    // writes what the browser laid out into the DOM, which the browser then prints.
    let probe = r#"<script>
      const sized = (sel) => [...document.querySelectorAll(sel)].filter(e => {
        const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length;
      document.body.dataset.probe = `plots=${sized("svg.plot")} tables=${sized("table")} ` +
        `rows=${document.querySelectorAll("td").length > 0} nav=${sized("nav a")}`;
    </script>"#;
    let probed = report.join("probed.html");
    std::fs::write(&probed, html.replace("</body>", &format!("{probe}</body>"))).unwrap();
    let (dom, console) = browse(&browser, &probed, &["--dump-dom"]);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let found = dom.split("data-probe=\"").nth(1).and_then(|s| s.split('"').next()).expect("the probe ran");
    let nav: usize = found.rsplit("nav=").next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(found.starts_with(&format!("plots={plots} tables={tables} rows=true")), "{found}");
    assert!(nav >= 12, "the navigation lists the sections and experiments: {found}");
    let _ = std::fs::remove_dir_all(&dir);
}
