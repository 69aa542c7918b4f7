//! The plan for people, in Terraform's habits:
//!
//! ```text
//!   # vm.web-1 on host "local" must be replaced (restart; volumes are kept)
//! -/+ vm "web-1" {
//!       ~ memory = "512MiB" -> "1GiB" # forces restart
//!         # (8 unchanged attributes hidden)
//!     }
//!
//! Plan: 1 to add, 0 to change, 1 to destroy.
//! ```
//!
//! Changes are listed in apply order (dependencies first, deletes in reverse), so the
//! text reads as what will happen. Long or multi-line values (a long `cmdline`, a list of NICs) are shown as a diff
//! (`similar`): a `-` and a `+` line, or one line per element. Colour only when asked.

use std::fmt::Write;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::action::Action;
use crate::diff::attrs::all_attributes;
use crate::plan::{AttrChange, Change, Plan};
use crate::render::values::{format_value, list_lines};

/// Values longer than this are shown as a diff, not as `old -> new`.
const LONG: usize = 60;

/// ANSI styles, or nothing when colour is off.
#[derive(Clone, Copy)]
struct Style {
    color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn glyph(self, action: Action) -> String {
        let code = match action {
            Action::Create => "32",
            Action::Update => "33",
            Action::Replace | Action::Delete => "31",
            Action::Start | Action::Stop => "36",
            Action::Migrate => "35",
            Action::NoOp => "0",
        };
        self.paint(code, action.glyph())
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
}

/// Renders `plan`; `color` adds ANSI colours (the CLI asks for them on a TTY).
pub fn render(plan: &Plan, color: bool) -> String {
    let style = Style { color };
    let mut out = String::new();
    if !plan.has_changes() {
        out.push_str(&style.bold("No changes."));
        out.push_str(" The live state of every host matches the configuration.\n");
        return out;
    }
    out.push_str("Resource actions are indicated with the following symbols:\n");
    for action in Action::ALL {
        if plan.actionable().any(|c| c.action == action) {
            let _ = writeln!(out, "{:>3} {}", style.glyph(action), action.label());
        }
    }
    out.push_str("\nvmctl will perform the following actions:\n");
    for change in plan.actionable() {
        out.push('\n');
        render_change(&mut out, change, style);
    }
    let s = plan.summary();
    let _ = writeln!(
        out,
        "\n{} {} to add, {} to change, {} to destroy.",
        style.bold("Plan:"),
        s.add,
        s.change,
        s.destroy
    );
    out
}

fn render_change(out: &mut String, change: &Change, style: Style) {
    let reason = change
        .reason
        .as_ref()
        .map_or_else(String::new, |r| format!(" ({r})"));
    let header = format!(
        "# {} on host {:?} {}{reason}",
        change.id,
        change.host,
        change.action.verb()
    );
    let _ = writeln!(out, "  {}", style.bold(&header));
    let glyph = format!("{:>3}", change.action.glyph());
    let glyph = glyph.replace(change.action.glyph(), &style.glyph(change.action));
    let _ = writeln!(out, "{glyph} {} {:?} {{", change.id.kind, change.id.name);
    match change.action {
        Action::Create => whole(out, change.after.as_ref(), Action::Create, style),
        Action::Delete => whole(out, change.before.as_ref(), Action::Delete, style),
        _ => {
            let width = name_width(change.attributes.iter().map(|a| a.name.as_str()));
            for attribute in &change.attributes {
                render_attribute(out, attribute, width, style);
            }
            let total = change.after.as_ref().map_or(0, |r| all_attributes(r).len());
            let hidden = total.saturating_sub(change.attributes.len());
            if hidden > 0 {
                let plural = if hidden == 1 { "" } else { "s" };
                let _ = writeln!(
                    out,
                    "        # ({hidden} unchanged attribute{plural} hidden)"
                );
            }
        }
    }
    out.push_str("    }\n");
}

fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(0)
}

/// Every attribute of a created or destroyed resource.
fn whole(out: &mut String, resource: Option<&crate::plan::Resource>, action: Action, style: Style) {
    let Some(resource) = resource else { return };
    let attributes = all_attributes(resource);
    let width = name_width(attributes.iter().map(|(n, _)| n.as_str()));
    let tail = if action == Action::Delete {
        " -> null"
    } else {
        ""
    };
    let glyph = style.glyph(action);
    for (name, value) in attributes {
        if value.is_null() {
            continue;
        }
        if let Some(nics) = nic_blocks(&name, &value) {
            write_nics(out, nics, "      ", &format!("{glyph} "), tail);
            continue;
        }
        let shown = format_value(&name, &value);
        let _ = writeln!(out, "      {glyph} {name:<width$} = {shown}{tail}");
    }
}

/// One line of a NIC block: the setting, its value shown, and a trailing comment.
type NicLine = (&'static str, String, &'static str);

/// A VM's `nics` as one block per NIC: `vlan`, `mac` and `ip` lines, the last with
/// `  # allocated` when vmctl chose the address. `None` for any other attribute.
fn nic_blocks(name: &str, value: &Value) -> Option<Vec<Vec<NicLine>>> {
    let Value::Array(nics) = value else {
        return None;
    };
    if name != "nics" {
        return None;
    }
    let blocks = nics
        .iter()
        .map(|nic| {
            let mut lines = Vec::new();
            for key in ["vlan", "mac", "ip"] {
                if let Some(v) = nic.get(key).filter(|v| !v.is_null()) {
                    let allocated =
                        key == "ip" && nic.get("ip-allocated") == Some(&Value::Bool(true));
                    let comment = if allocated { "  # allocated" } else { "" };
                    lines.push((key, format_value(key, v), comment));
                }
            }
            lines
        })
        .collect();
    Some(blocks)
}

/// Writes each NIC of `blocks` as `nic {` … `}`, indented by `indent`, each line after
/// `glyph` (with a space; its glyph one character wide) and ending in `tail`.
fn write_nics(out: &mut String, blocks: Vec<Vec<NicLine>>, indent: &str, glyph: &str, tail: &str) {
    for nic in blocks {
        let _ = writeln!(out, "{indent}{glyph}nic {{");
        for (key, shown, comment) in nic {
            let _ = writeln!(out, "{indent}    {glyph}{key:<4} = {shown}{tail}{comment}");
        }
        let pad = if glyph.is_empty() { "" } else { "  " };
        let _ = writeln!(out, "{indent}{pad}}}");
    }
}

/// A resource with every attribute, in the plan's attribute format (`vm "web-1" {`,
/// one `name = value` line each, `}`): how `vmctl show` prints a live resource. Null
/// attributes are left out, as in a created resource's block; none at all is `netns "x" {}`.
pub fn render_resource(resource: &crate::plan::Resource) -> String {
    let mut out = String::new();
    let attributes: Vec<(String, Value)> = all_attributes(resource)
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .collect();
    let head = format!("{} {:?}", resource.kind(), resource.id().name);
    if attributes.is_empty() {
        let _ = writeln!(out, "{head} {{}}");
        return out;
    }
    let width = name_width(attributes.iter().map(|(n, _)| n.as_str()));
    let _ = writeln!(out, "{head} {{");
    for (name, value) in attributes {
        if let Some(nics) = nic_blocks(&name, &value) {
            write_nics(&mut out, nics, "    ", "", "");
            continue;
        }
        let _ = writeln!(out, "    {name:<width$} = {}", format_value(&name, &value));
    }
    out.push_str("}\n");
    out
}

fn render_attribute(out: &mut String, attribute: &AttrChange, width: usize, style: Style) {
    let name = &attribute.name;
    let comment = attribute
        .effect
        .comment()
        .map_or_else(String::new, |c| format!(" {}", style.paint("31", c)));
    let (before, after) = (&attribute.before, &attribute.after);
    let (glyph, line) = match (before.is_null(), after.is_null()) {
        (true, _) => (Action::Create, format_value(name, after)),
        (_, true) => (
            Action::Delete,
            format!("{} -> null", format_value(name, before)),
        ),
        _ => (
            Action::Update,
            format!(
                "{} -> {}",
                format_value(name, before),
                format_value(name, after)
            ),
        ),
    };
    let glyph = style.glyph(glyph);
    let short = |v: &Value| format_value(name, v).len() <= LONG && !has_newline(v);
    if short(before) && short(after) {
        let _ = writeln!(out, "      {glyph} {name:<width$} = {line}{comment}");
        return;
    }
    match (list_lines(before), list_lines(after)) {
        (Some(old), Some(new)) => {
            let _ = writeln!(out, "      {glyph} {name:<width$} = [");
            let (old, new) = (old.join(",\n") + ",\n", new.join(",\n") + ",\n");
            line_diff(out, &old, &new, "          ", style);
            let _ = writeln!(out, "        ]{comment}");
        }
        _ => {
            let _ = writeln!(out, "      {glyph} {name}{comment}");
            let (old, new) = (text_of(before), text_of(after));
            if old.contains('\n') || new.contains('\n') {
                line_diff(out, &old, &new, "          ", style);
            } else {
                word_diff(out, &old, &new, "          ", style);
            }
        }
    }
}

fn has_newline(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.contains('\n'))
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One line per line of text: `  kept`, `- removed`, `+ added`.
fn line_diff(out: &mut String, old: &str, new: &str, indent: &str, style: Style) {
    let diff = TextDiff::from_lines(old, new);
    for change in diff.iter_all_changes() {
        let text = change.value().trim_end_matches('\n');
        let line = match change.tag() {
            ChangeTag::Equal => format!("  {text}"),
            ChangeTag::Delete => style.paint("31", &format!("- {text}")),
            ChangeTag::Insert => style.paint("32", &format!("+ {text}")),
        };
        let _ = writeln!(out, "{indent}{line}");
    }
}

/// A long one-line value: a `-` line and a `+` line, the changed words emphasized when
/// colour is on.
fn word_diff(out: &mut String, old: &str, new: &str, indent: &str, style: Style) {
    let diff = TextDiff::from_words(old, new);
    let (mut minus, mut plus) = (String::new(), String::new());
    for change in diff.iter_all_changes() {
        let word = change.value();
        match change.tag() {
            ChangeTag::Equal => {
                minus.push_str(word);
                plus.push_str(word);
            }
            ChangeTag::Delete => minus.push_str(&style.paint("1;31", word)),
            ChangeTag::Insert => plus.push_str(&style.paint("1;32", word)),
        }
    }
    let _ = writeln!(out, "{indent}{} {minus}", style.paint("31", "-"));
    let _ = writeln!(out, "{indent}{} {plus}", style.paint("32", "+"));
}
