//! `[[mask]]` sections (see `crate::mask` for their meaning), reported with their lines like
//! the rest of the file. A section with any error is left out (and the whole policy fails).

use std::collections::HashSet;

use super::super::Glob;
use super::Value;
use super::access::{field, fields, level, section_name, tables};
use super::report::{Report, RuleCx};
use crate::mask::detect::Detector;
use crate::mask::{MaskRule, Style, UNMASK_LEVEL};

const MASK_FIELDS: &[&str] = &[
    "name",
    "columns",
    "names",
    "detect",
    "style",
    "keep",
    "strict",
    "resources",
    "environments",
    "unless_levels",
];
/// `keep` range for the `partial` style, and its default.
const KEEP: std::ops::RangeInclusive<i64> = 1..=64;
const DEFAULT_KEEP: usize = 4;

/// The `[[mask]]` array.
pub(super) fn masks(report: &mut Report<'_>, value: &Value<'_>) -> Vec<MaskRule> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, (table, header)) in tables(report, value, "mask").into_iter().enumerate() {
        let mut cx = RuleCx::top(report);
        let found = fields(&mut cx, table, "mask", MASK_FIELDS);
        let name = section_name(
            &mut cx,
            field(&found, "name"),
            header.clone(),
            "mask",
            index,
            &mut seen,
        );
        let mut columns = Vec::new();
        if let Some(v) = field(&found, "columns") {
            for (entry, span) in cx.strings("columns", v).unwrap_or_default() {
                if entry.split('.').count() != 3 {
                    cx.error(
                        span,
                        format!(
                            "bad column {entry:?}: write schema.table.column (globs allowed, e.g. \"public.customers.*\")"
                        ),
                    );
                    continue;
                }
                match Glob::new(entry) {
                    Ok(g) => columns.push(g),
                    Err(why) => cx.error(span, format!("bad column pattern {entry:?}: {why}")),
                }
            }
        }
        let names = cx.globs("names", field(&found, "names"));
        let mut detect = Vec::new();
        if let Some(v) = field(&found, "detect") {
            for (entry, span) in cx.strings("detect", v).unwrap_or_default() {
                match Detector::from_name(entry) {
                    Some(d) if !detect.contains(&d) => detect.push(d),
                    Some(_) => {}
                    None => {
                        let known: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
                        cx.error(
                            span,
                            format!("unknown detector {entry:?} (known: {})", known.join(", ")),
                        );
                    }
                }
            }
        }
        if columns.is_empty() && names.is_empty() && detect.is_empty() && cx.is_clean() {
            cx.error(
                header.clone(),
                format!(
                    "mask #{} masks nothing: give `columns`, `names` or `detect`",
                    index + 1
                ),
            );
        }
        let keep = match field(&found, "keep") {
            Some(v) => cx.integer("keep", v).and_then(|n| {
                if KEEP.contains(&n) {
                    usize::try_from(n).ok()
                } else {
                    cx.error(
                        v.span(),
                        format!(
                            "`keep` must be between {} and {}, not {n}",
                            KEEP.start(),
                            KEEP.end()
                        ),
                    );
                    None
                }
            }),
            None => Some(DEFAULT_KEEP),
        };
        let style = match field(&found, "style") {
            None => Some(Style::Redact),
            Some(v) => match cx.string("style", v) {
                Some("redact") => Some(Style::Redact),
                Some("partial") => keep.map(|keep| Style::Partial { keep }),
                Some("hash") => Some(Style::Hash),
                Some("null") => Some(Style::Null),
                Some(other) => {
                    cx.error(
                        v.span(),
                        format!(
                            "unknown style {other:?} (expected \"redact\", \"partial\", \"hash\" or \"null\")"
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        if let (Some(v), Some(s)) = (field(&found, "keep"), style)
            && !matches!(s, Style::Partial { .. })
        {
            cx.error(v.span(), "`keep` only applies to `style = \"partial\"`");
        }
        let strict = field(&found, "strict").is_some_and(|v| cx.flag("strict", v));
        let unless_levels = match field(&found, "unless_levels") {
            Some(v) => cx
                .strings("unless_levels", v)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(entry, span)| level(&mut cx, entry, span))
                .collect(),
            None => vec![UNMASK_LEVEL.to_owned()],
        };
        let resources = cx.globs("resources", field(&found, "resources"));
        let environments = cx.globs("environments", field(&found, "environments"));
        if !cx.is_clean() {
            continue;
        }
        if let (Some(name), Some(style)) = (name, style) {
            out.push(MaskRule {
                name,
                columns,
                names,
                detect,
                style,
                strict,
                resources,
                environments,
                unless_levels,
            });
        }
    }
    out
}
