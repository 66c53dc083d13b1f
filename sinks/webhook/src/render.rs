//! Templates (minijinja, rendered once per record) and the default text.
//!
//! A template sees the change's JSON ([`crate::record::change_json`]) as
//! variables: `kind` (`event`, `job`, `pod`), `change` (`applied`,
//! `removed`), `removed_at`, `record` (every field of the record), and
//! `route` (the route's name). Chat formats join the rendered texts of a
//! message's records with newlines; the `json` format parses each rendered
//! text as a JSON value.

use minijinja::Environment;
use serde_json::Value;

use crate::settings::Route;

/// The text of a record when its route has no template.
pub const DEFAULT_TEMPLATE: &str = r#"{%- set r = record -%}
{%- if kind == "event" -%}
[{{ r.event_type }}] {{ r.involved.kind }} {{ r.meta.namespace }}/{{ r.involved.name }}: {{ r.reason }}{% if r.count > 1 %} (x{{ r.count }}){% endif %} - {{ r.message }}
{%- elif kind == "job" -%}
[{{ r.kind }}] {{ r.meta.namespace }}/{{ r.meta.name }}: {{ r.status }}{% if change == "removed" %} (deleted){% endif %}{% if r.remark %} - {{ r.remark }}{% endif %}
{%- else -%}
[Pod] {{ r.meta.namespace }}/{{ r.meta.name }}: {{ r.status }}{% if change == "removed" %} (deleted){% endif %}{% if r.remark %} - {{ r.remark }}{% endif %}
{%- endif -%}"#;

const DEFAULT_NAME: &str = "<default>";

/// The compiled templates of all routes.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Compiles each route's template; the error names the route's
    /// `template` setting and minijinja's reason.
    pub fn new(routes: &[Route]) -> Result<Renderer, (String, String)> {
        let mut env = Environment::new();
        env.add_template(DEFAULT_NAME, DEFAULT_TEMPLATE)
            .map_err(|e| ("<default template>".to_owned(), e.to_string()))?;
        for r in routes {
            if let Some(src) = &r.template {
                env.add_template_owned(r.name.clone(), src.clone())
                    .map_err(|e| (format!("route.{}.template", r.name), e.to_string()))?;
            }
        }
        Ok(Renderer { env })
    }

    /// Renders `route`'s template (or the default one) for `change`, the
    /// JSON of one change.
    pub fn render(&self, route: &Route, change: &Value) -> Result<String, String> {
        let name = if route.template.is_some() {
            route.name.as_str()
        } else {
            DEFAULT_NAME
        };
        let t = self.env.get_template(name).map_err(|e| e.to_string())?;
        let mut ctx = change.clone();
        if let Value::Object(m) = &mut ctx {
            m.insert("route".into(), Value::String(route.name.clone()));
        }
        t.render(minijinja::Value::from_serialize(&ctx))
            .map_err(|e| format!("route `{}`: template: {e}", route.name))
    }
}
