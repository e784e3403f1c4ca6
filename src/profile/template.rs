//! The two small languages of a profile: paths that pick a value out of an event's arguments (`$0`,
//! `$1.user.name`) or the handshake (`auth.serverOffset`), and templates that build an outgoing argument from
//! named variables (`"{user.name} left"`, `"{seq}"`).

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// Where a value is read from in an incoming event: positional argument `index`, then `fields` inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgPath {
    pub index: usize,
    pub fields: Vec<String>,
}

impl ArgPath {
    /// Parses `$N` or `$N.field.field`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text.strip_prefix('$').ok_or_else(|| {
            format!("{text:?} is not an argument path: write $0 for the first argument, $0.field for a field of it")
        })?;
        let mut parts = rest.split('.');
        let index = parts
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < 16)
            .ok_or_else(|| {
                format!(
                    "{text:?}: after $ comes the argument's position, 0 to 15 ($0 is the first)"
                )
            })?;
        let fields = parts.map(str::to_owned).collect::<Vec<_>>();
        if fields.iter().any(String::is_empty) {
            return Err(format!("{text:?} has an empty field name"));
        }
        Ok(Self { index, fields })
    }

    /// The value at this path, if the event has it.
    pub fn get<'a>(&self, args: &'a [Json]) -> Option<&'a Json> {
        let mut value = args.get(self.index)?;
        for field in &self.fields {
            value = value.get(field)?;
        }
        Some(value)
    }
}

impl std::fmt::Display for ArgPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}", self.index)?;
        for field in &self.fields {
            write!(f, ".{field}")?;
        }
        Ok(())
    }
}

/// Where a value is read from in the handshake: `auth.<field>` (the client's `auth` object) or `query.<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakePath {
    Auth(String),
    Query(String),
}

impl HandshakePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            Some(("auth", field)) if !field.is_empty() => Ok(Self::Auth(field.to_owned())),
            Some(("query", name)) if !name.is_empty() => Ok(Self::Query(name.to_owned())),
            _ => Err(format!(
                "{text:?}: write auth.<field> (from io(url, {{ auth }})) or query.<name> (from the URL)"
            )),
        }
    }
}

/// One piece of a template string.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Var(Var),
}

/// A variable a template names: a known name (`user.name`) or an argument of the incoming event (`$0.type`).
#[derive(Clone, Debug, PartialEq)]
pub enum Var {
    Named(String),
    Arg(ArgPath),
}

/// An outgoing value built from variables. A string that is exactly one `{var}` inserts the variable's value
/// as it is (a number stays a number, an object an object); any other string with `{var}` in it is text.
#[derive(Clone, Debug, PartialEq)]
pub enum Template {
    Literal(Json),
    Var(Var),
    Text(Vec<Part>),
    List(Vec<Template>),
    Object(Vec<(String, Template)>),
}

/// The values a template may use, by name.
pub trait Vars {
    fn get(&self, name: &str) -> Option<Json>;
    /// The incoming event's arguments, where there is one.
    fn args(&self) -> &[Json] {
        &[]
    }
}

impl Vars for BTreeMap<&'static str, Json> {
    fn get(&self, name: &str) -> Option<Json> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Template {
    /// Compiles a template, checking every variable it names against `known` (and allowing `$N` arguments only
    /// where `with_args`).
    pub fn compile(value: &Json, known: &[&str], with_args: bool) -> Result<Self, String> {
        Ok(match value {
            Json::String(text) => compile_text(text, known, with_args)?,
            Json::Array(items) => Template::List(
                items
                    .iter()
                    .map(|item| Template::compile(item, known, with_args))
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(fields) => Template::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v, known, with_args)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    /// Whether the template names the variable (so that costly ones are computed only when used).
    pub fn uses(&self, name: &str) -> bool {
        match self {
            Template::Literal(_) => false,
            Template::Var(Var::Named(n)) => n == name,
            Template::Var(Var::Arg(_)) => false,
            Template::Text(parts) => parts
                .iter()
                .any(|p| matches!(p, Part::Var(Var::Named(n)) if n == name)),
            Template::List(items) => items.iter().any(|t| t.uses(name)),
            Template::Object(fields) => fields.iter().any(|(_, t)| t.uses(name)),
        }
    }

    pub fn render(&self, vars: &dyn Vars) -> Json {
        match self {
            Template::Literal(value) => value.clone(),
            Template::Var(var) => lookup(var, vars).unwrap_or(Json::Null),
            Template::Text(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(text) => out.push_str(text),
                        Part::Var(var) => match lookup(var, vars) {
                            Some(Json::String(s)) => out.push_str(&s),
                            Some(Json::Null) | None => {}
                            Some(other) => out.push_str(&other.to_string()),
                        },
                    }
                }
                Json::String(out)
            }
            Template::List(items) => Json::Array(items.iter().map(|t| t.render(vars)).collect()),
            Template::Object(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, t)| (k.clone(), t.render(vars)))
                    .collect(),
            ),
        }
    }
}

fn lookup(var: &Var, vars: &dyn Vars) -> Option<Json> {
    match var {
        Var::Named(name) => vars.get(name),
        Var::Arg(path) => path.get(vars.args()).cloned(),
    }
}

fn compile_text(text: &str, known: &[&str], with_args: bool) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|i| open + i)
            .ok_or_else(|| format!("{text:?}: a {{ without its }}"))?;
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let name = rest[open + 1..close].trim();
        parts.push(Part::Var(variable(name, known, with_args)?));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(match parts.as_slice() {
        [] => Template::Literal(Json::String(String::new())),
        [Part::Var(var)] => Template::Var(var.clone()),
        [Part::Text(text)] => Template::Literal(Json::String(text.clone())),
        _ => Template::Text(parts),
    })
}

fn variable(name: &str, known: &[&str], with_args: bool) -> Result<Var, String> {
    if name.starts_with('$') {
        if !with_args {
            return Err(format!(
                "{{{name}}}: argument paths are only available in a rule's own templates; use one of {}",
                known.join(", ")
            ));
        }
        return ArgPath::parse(name).map(Var::Arg);
    }
    if known.contains(&name) {
        Ok(Var::Named(name.to_owned()))
    } else {
        Err(format!(
            "unknown variable {{{name}}}; here you can use {}",
            known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Both(BTreeMap<&'static str, Json>, Vec<Json>);
    impl Vars for Both {
        fn get(&self, name: &str) -> Option<Json> {
            self.0.get(name).cloned()
        }
        fn args(&self) -> &[Json] {
            &self.1
        }
    }

    #[test]
    fn paths_pick_arguments_and_fields() {
        let args = vec![json!("hi"), json!({ "user": { "name": "ada" } })];
        assert_eq!(
            ArgPath::parse("$0").expect("path").get(&args),
            Some(&json!("hi"))
        );
        assert_eq!(
            ArgPath::parse("$1.user.name").expect("path").get(&args),
            Some(&json!("ada"))
        );
        assert_eq!(ArgPath::parse("$2").expect("path").get(&args), None);
        assert!(ArgPath::parse("text").is_err());
        assert!(ArgPath::parse("$x").is_err());
        assert!(ArgPath::parse("$0..a").is_err());
        assert_eq!(
            HandshakePath::parse("auth.serverOffset"),
            Ok(HandshakePath::Auth("serverOffset".into()))
        );
        assert!(HandshakePath::parse("serverOffset").is_err());
    }

    #[test]
    fn templates_keep_types_and_interpolate_text() {
        let known = ["seq", "user.name", "text"];
        let t = Template::compile(
            &json!(["{text}", "{seq}", { "m": "{user.name}님이 나갔습니다.", "raw": "{$0}" }, 3]),
            &known,
            true,
        )
        .expect("compile");
        let vars = Both(
            BTreeMap::from([
                ("seq", json!(7)),
                ("user.name", json!("민수")),
                ("text", json!("hi")),
            ]),
            vec![json!({ "type": "notice" })],
        );
        assert_eq!(
            t.render(&vars),
            json!(["hi", 7, { "m": "민수님이 나갔습니다.", "raw": { "type": "notice" } }, 3])
        );
        assert!(t.uses("user.name"));
        assert!(!t.uses("online"));
    }

    #[test]
    fn templates_name_what_is_wrong() {
        let err = Template::compile(&json!("{usr.name}"), &["user.name"], false).expect_err("bad");
        assert!(err.contains("unknown variable {usr.name}"), "{err}");
        assert!(err.contains("user.name"), "{err}");
        let err = Template::compile(&json!("{text"), &["text"], false).expect_err("bad");
        assert!(err.contains("without its"), "{err}");
        let err = Template::compile(&json!("{$0}"), &["text"], false).expect_err("bad");
        assert!(err.contains("argument paths"), "{err}");
    }
}
