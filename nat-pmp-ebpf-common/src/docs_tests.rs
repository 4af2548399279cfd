//! The class lists in docs/classes.md and README.md are generated from
//! [`CLASSES`]: these tests render them and compare them with the files,
//! between `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers.
//!
//! `UPDATE_DOCS=1 cargo test -p nat-pmp-ebpf-common docs` rewrites the
//! blocks instead of failing (the prose around them is never touched).

use std::{fs, path::PathBuf};

use crate::class::{Class, CLASSES};

/// How to bring the files back in step, for failure messages.
const REGENERATE: &str = "UPDATE_DOCS=1 cargo test -p nat-pmp-ebpf-common docs";

/// The first line of every generated block.
fn generated_note() -> String {
    format!(
        "<!-- Generated from CLASSES in nat-pmp-ebpf-common/src/class.rs; do not edit: \
         {REGENERATE} -->\n"
    )
}

/// A row of a markdown table.
fn line<S: AsRef<str>>(cells: &[S]) -> String {
    let cells: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
    format!("| {} |\n", cells.join(" | "))
}

/// A markdown table of every class in display order, after the generated
/// note: `columns` holds each column's title and alignment (`---`, `---:`),
/// `row` a class's cells.
fn table(columns: &[(&str, &str)], row: impl Fn(Class) -> Vec<String>) -> String {
    let titles: Vec<&str> = columns.iter().map(|(title, _)| *title).collect();
    let aligns: Vec<&str> = columns.iter().map(|(_, align)| *align).collect();
    let mut out = generated_note() + &line(&titles);
    out += &["|", &aligns.join("|"), "|\n"].concat();
    for class in Class::DISPLAY {
        // `|` would end a cell.
        let cells: Vec<String> = row(class).iter().map(|c| c.replace('|', "\\|")).collect();
        out += &line(&cells);
    }
    out
}

/// The full table of docs/classes.md.
fn classes_table() -> String {
    let columns = [
        ("class", "---"),
        ("index", "---:"),
        ("group", "---"),
        ("label", "---"),
        ("version, opcode", "---"),
        ("meaning", "---"),
        ("RFC", "---"),
        ("drop mode", "---"),
    ];
    table(&columns, |class| {
        let i = class.info();
        vec![
            format!("`{}`", i.name),
            class.index().to_string(),
            i.group.name().to_owned(),
            i.label.to_owned(),
            i.opcode.to_owned(),
            i.meaning.to_owned(),
            i.rfc.to_owned(),
            i.drop_mode.to_owned(),
        ]
    })
}

/// The README's short list.
fn classes_short() -> String {
    let columns = [("class", "---"), ("label", "---"), ("meaning", "---")];
    table(&columns, |class| {
        let i = class.info();
        vec![
            format!("`{}`", i.name),
            i.label.to_owned(),
            i.meaning.to_owned(),
        ]
    })
}

/// `text` with the lines between `<!-- {name}:begin -->` and
/// `<!-- {name}:end -->` replaced by `body`; an error when either marker is
/// missing, repeated or out of order.
fn splice(text: &str, name: &str, body: &str) -> Result<String, String> {
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let once = |marker: &str| match text.matches(marker).count() {
        1 => Ok(text.find(marker).unwrap_or_default()),
        0 => Err(format!("the marker `{}` is missing", marker.trim_end())),
        n => Err(format!(
            "the marker `{}` appears {n} times",
            marker.trim_end()
        )),
    };
    let from = once(&begin)? + begin.len();
    let to = once(&end)?;
    if to < from {
        return Err(format!("`{}` comes before `{begin}`", end.trim_end()));
    }
    Ok([&text[..from], body, &text[to..]].concat())
}

/// The repository's root (this crate's parent).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(file: &str) -> String {
    let path = root().join(file);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// docs/classes.md's table and the README's list are what [`CLASSES`]
/// renders (or, with `UPDATE_DOCS=1`, are rewritten to be).
#[test]
fn docs_class_lists_are_generated_from_the_table() {
    let update = std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1");
    // Every file's markers are checked before any file is written.
    let stale: Vec<(&str, String)> = [
        ("docs/classes.md", "classes", classes_table()),
        ("README.md", "classes-short", classes_short()),
    ]
    .into_iter()
    .filter_map(|(file, marker, body)| {
        let text = read(file);
        let want = splice(&text, marker, &body).unwrap_or_else(|e| {
            panic!(
                "{file}: {e}; put the generated block between `<!-- {marker}:begin -->` \
                 and `<!-- {marker}:end -->`, each on a line of its own"
            )
        });
        (want != text).then_some((file, want))
    })
    .collect();
    if update {
        for (file, want) in &stale {
            let path = root().join(file);
            fs::write(&path, want).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        return;
    }
    let stale: Vec<&str> = stale.iter().map(|(file, _)| *file).collect();
    assert!(
        stale.is_empty(),
        "{} out of step with CLASSES (nat-pmp-ebpf-common/src/class.rs); regenerate with `{}`",
        stale.join(" and "),
        REGENERATE
    );
}

/// The hand-written section of each class in docs/classes.md states the
/// table's RFC section and drop-mode answer.
#[test]
fn docs_class_sections_agree_with_the_table() {
    let doc = read("docs/classes.md");
    for info in &CLASSES {
        let heading = format!("\n### `{}`\n", info.name);
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/classes.md has no section `{}`", heading.trim()));
        let rest = &doc[start + heading.len()..];
        let section = &rest[..rest.find("\n### ").unwrap_or(rest.len())];
        for want in [
            format!("({})", info.rfc),
            format!("Drop mode: {}", info.drop_mode),
        ] {
            assert!(
                section.contains(&want),
                "docs/classes.md, section `{}`: no \"{want}\" (as in CLASSES)",
                info.name
            );
        }
    }
}

#[test]
fn docs_splice_needs_both_markers_once_and_in_order() {
    let doc = "a\n<!-- x:begin -->\nold\n<!-- x:end -->\nb\n";
    assert_eq!(
        splice(doc, "x", "new\n").as_deref(),
        Ok("a\n<!-- x:begin -->\nnew\n<!-- x:end -->\nb\n")
    );
    assert!(splice("a\n<!-- x:end -->\n", "x", "").is_err());
    assert!(splice("<!-- x:begin -->\nb\n", "x", "").is_err());
    assert!(splice("<!-- x:end -->\n<!-- x:begin -->\n", "x", "").is_err());
    let twice = [doc, doc].concat();
    assert!(splice(&twice, "x", "").is_err());
    assert!(splice(doc, "y", "").is_err());
    // Every generated block states where it comes from.
    for block in [classes_table(), classes_short()] {
        assert!(block.starts_with(&generated_note()));
        assert_eq!(
            block.lines().filter(|l| l.starts_with("| `")).count(),
            Class::COUNT
        );
    }
}
