//! Whether an example configuration file documents every key of a configuration type. The keys
//! come from the type itself (its JSON schema, derived by `schemars` in the daemons' tests), so
//! a key added to the type and not to the example fails the test.
//!
//! A key counts as documented when its name stands, as a whole word, in the part of the
//! example that belongs to its table: from the table's header (`[x]`, `[[x]]`, or a commented
//! `# [x]`) to the next header; keys of the root table before the first header. A key holding
//! a table counts when a header of that table (or one below it) is there.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The keys of the type whose JSON schema is `schema` that `example` does not document, as
/// dotted paths (`[]` marks an array of tables: `camera[].source.path`).
pub fn undocumented(schema: &Value, example: &str) -> Vec<String> {
    let mut keys = BTreeSet::new();
    walk(schema, schema, "", &mut keys, 0);
    let sections = sections(example);
    keys.into_iter()
        .filter(|key| !documented(key, &sections))
        .collect()
}

/// Every key path below `schema`, following `$ref`s into `root`'s `$defs`.
fn walk(schema: &Value, root: &Value, path: &str, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 32 {
        return;
    }
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        walk(&root["$defs"][name], root, path, out, depth + 1);
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            let key = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            out.insert(key.clone());
            walk(sub, root, &key, out, depth + 1);
        }
    }
    if schema["items"].is_object() {
        walk(&schema["items"], root, &format!("{path}[]"), out, depth + 1);
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        for sub in schema[combinator].as_array().into_iter().flatten() {
            walk(sub, root, path, out, depth + 1);
        }
    }
}

/// The example's text by table name ("" for the root table), headers commented or not.
fn sections(example: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    for line in example.lines() {
        let bare = line.trim().trim_start_matches('#').trim();
        let header = bare
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(|h| h.trim_matches(|c| c == '[' || c == ']'))
            .filter(|h| {
                !h.is_empty()
                    && h.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
                    })
            });
        if let Some(name) = header {
            current = name.to_string();
            out.entry(current.clone()).or_default();
            continue;
        }
        let text = out.entry(current.clone()).or_default();
        text.push_str(line);
        text.push('\n');
    }
    out
}

fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

fn documented(key: &str, sections: &BTreeMap<String, String>) -> bool {
    let table_path = key.replace("[]", "");
    if sections
        .keys()
        .any(|h| *h == table_path || h.starts_with(&format!("{table_path}.")))
    {
        return true;
    }
    let (parent, leaf) = table_path.rsplit_once('.').unwrap_or(("", &table_path));
    // The nearest enclosing table that has a header (an inline table's keys are documented
    // in its parent's part: `source = { type = "folder", … }`).
    let mut table = parent;
    loop {
        if let Some(text) = sections.get(table) {
            return has_word(text, leaf);
        }
        match table.rsplit_once('.') {
            Some((up, _)) => table = up,
            None if !table.is_empty() => table = "",
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "listen": {"type": "string"},
                "sync": {"$ref": "#/$defs/Sync"},
                "camera": {"type": "array", "items": {"$ref": "#/$defs/Camera"}},
            },
            "$defs": {
                "Sync": {"type": "object", "properties": {"endpoint": {"type": "string"}}},
                "Camera": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "source": {"oneOf": [
                        {"type": "object", "properties": {"type": {"const": "folder"}, "path": {}}},
                        {"anyOf": [{"type": "object", "properties": {"seed": {}}}, {"type": "null"}]},
                    ]},
                }},
            },
        })
    }

    #[test]
    fn every_key_of_the_type_must_stand_in_its_table() {
        let full = "# where to listen\nlisten = \"x\"\n[sync]\n# endpoint = \"…\"\n\
                    [[camera]]\nname = \"a\"\n# source: type folder with path, or seed\n";
        assert!(
            undocumented(&schema(), full).is_empty(),
            "{:?}",
            undocumented(&schema(), full)
        );
        let missing = "listen = 1\n[sync]\n[[camera]]\nname = \"a\"\nendpoint = 1\n";
        assert_eq!(
            undocumented(&schema(), missing),
            [
                "camera[].source",
                "camera[].source.path",
                "camera[].source.seed",
                "camera[].source.type",
                "sync.endpoint"
            ]
        );
    }
}
