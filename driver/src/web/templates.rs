//! The pages' templates (minijinja, compiled into the binary from `templates/`), their
//! stylesheet and their one script. Server-rendered: the pages need no front-end build.

use anyhow::{Context, Result};
use minijinja::Environment;
use serde::Serialize;

/// The stylesheet of the pages (and, inline, of reports).
pub const CSS: &str = include_str!("templates/app.css");
/// The pages' script: a search page follows its status live.
pub const JS: &str = include_str!("templates/app.js");

const TEMPLATES: [(&str, &str); 12] = [
    ("base.html", include_str!("templates/base.html")),
    ("_form.html", include_str!("templates/_form.html")),
    ("_query.html", include_str!("templates/_query.html")),
    ("_cards.html", include_str!("templates/_cards.html")),
    (
        "_history_table.html",
        include_str!("templates/_history_table.html"),
    ),
    ("index.html", include_str!("templates/index.html")),
    ("searches.html", include_str!("templates/searches.html")),
    ("search.html", include_str!("templates/search.html")),
    ("photo.html", include_str!("templates/photo.html")),
    ("datasets.html", include_str!("templates/datasets.html")),
    ("error.html", include_str!("templates/error.html")),
    ("report.html", include_str!("templates/report.html")),
];

/// Every template, parsed once.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Parses the templates (a syntax error is a bug, caught by the unit test below).
    pub fn new() -> Result<Templates> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .with_context(|| format!("template {name}"))?;
        }
        Ok(Templates { env })
    }

    /// Renders `name` with `context` (HTML-escaped: every template is `.html`).
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .with_context(|| format!("rendering {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes() {
        let templates = Templates::new().unwrap();
        let page = templates
            .render(
                "error.html",
                minijinja::context! { message => "<script>x</script>" },
            )
            .unwrap();
        assert!(page.contains("&lt;script&gt;x"), "{page}");
        assert!(!page.contains("<script>x"), "{page}");
    }
}
