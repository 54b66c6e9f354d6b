//! `check -o junit`: one JUnit test case per judged object, so a CI system shows each
//! workload's verdict as a test (a denial or a required approval as a failure, with why).

use std::fmt::Write;

use super::output::CheckReport;

/// The reports as a JUnit XML document with one test suite.
pub fn suite(reports: &[&CheckReport]) -> String {
    let failures = reports.iter().filter(|r| !r.allowed).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"countersign check\" tests=\"{}\" failures=\"{failures}\">",
        reports.len()
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"countersign check\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
        reports.len()
    );
    for report in reports {
        let _ = write!(
            xml,
            "    <testcase classname=\"countersign\" name=\"{}\"",
            escape(&report.change.target)
        );
        if report.allowed {
            let _ = writeln!(xml, "/>");
            continue;
        }
        let headline = report.reasons.first().cloned().unwrap_or_default();
        let _ = writeln!(xml, ">");
        let _ = writeln!(
            xml,
            "      <failure type=\"{}\" message=\"{}\">{}</failure>",
            report.verdict,
            escape(&headline),
            escape(&format!(
                "{}\nchange: {}\ndigest: {}",
                report.reasons.join("\n"),
                report.change.summary,
                report.change.digest
            ))
        );
        let _ = writeln!(xml, "    </testcase>");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Text as XML character data or an attribute value; characters XML 1.0 cannot carry are
/// dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::ChangeReport;

    fn report(target: &str, allowed: bool, reason: &str) -> CheckReport {
        CheckReport {
            allowed,
            verdict: if allowed { "Allowed" } else { "Denied" },
            reasons: vec![reason.into()],
            policies: vec![],
            change: ChangeReport {
                target: target.into(),
                digest: "sha256:00".into(),
                summary: "image web: a → b".into(),
                images: vec![],
                changed_paths: vec![],
                changes: vec![],
                risks: vec![],
            },
            approval: None,
            break_glass: None,
        }
    }

    #[test]
    fn each_object_is_a_test_case_and_a_refusal_a_failure() {
        let allowed = report("Deployment shop/web", true, "no policy");
        let denied = report(
            "Deployment shop/<api>",
            false,
            "env AWS_SECRET_ACCESS_KEY holds a \"secret\" & more\u{1}",
        );
        let xml = suite(&[&allowed, &denied]);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(
            xml.contains("<testcase classname=\"countersign\" name=\"Deployment shop/web\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"Deployment shop/&lt;api&gt;\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "message=\"env AWS_SECRET_ACCESS_KEY holds a &quot;secret&quot; &amp; more\""
            ),
            "{xml}"
        );
        assert!(!xml.contains('\u{1}'));
    }
}
