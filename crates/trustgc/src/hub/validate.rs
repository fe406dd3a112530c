//! The checks of every value a cache path is built from: repository ids, revisions and
//! file names (given by the user), commit ids and blob ids (sent by the hub, or read back
//! from the cache). Nothing here touches the file system.

/// The longest revision accepted (git itself has no limit; file systems do).
const MAX_REVISION_BYTES: usize = 255;

/// The longest owner or name of a repository id (the hub's own limit).
const MAX_REPO_PART: usize = 96;

/// A commit id: 40 lowercase hex digits (a git SHA-1).
pub(super) fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && is_lower_hex(s)
}

/// A blob id, the name of a file in `blobs/`: 40 lowercase hex digits (the git blob id of
/// a small file) or 64 (the SHA-256 of an LFS or Xet file).
pub(super) fn is_blob_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a repository id `owner/name` (the hub's rules: letters, digits, `-`, `_`, `.`;
/// no `--` or `..`; not starting or ending with `-` or `.`; at most 96 characters each)
/// and returns its two parts.
pub(super) fn check_repo_id(repo_id: &str) -> Result<(&str, &str), &'static str> {
    let Some((owner, name)) = repo_id.split_once('/') else {
        return Err("it has no `/` between owner and name");
    };
    for part in [owner, name] {
        if part.is_empty() {
            return Err("the owner or the name is empty");
        }
        if part.len() > MAX_REPO_PART {
            return Err("the owner or the name is longer than 96 characters");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(
                "only letters, digits, `-`, `_` and `.` may appear in the owner and the name",
            );
        }
        if part.contains("--") || part.contains("..") {
            return Err("`--` and `..` may not appear in the owner or the name");
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err("the owner and the name may not start or end with `-` or `.`");
        }
    }
    Ok((owner, name))
}

/// Checks a revision (branch, tag or commit) by git's rules for ref names
/// (`git check-ref-format`), which also make it safe as a path below `refs/`:
/// `/`-separated components, none empty, none starting with `.`, none ending with
/// `.lock`; no `..`, no `@{`, not `@`; no control character, space, `~ ^ : ? * [ \`;
/// not ending with `.` or `/`. At most 255 bytes.
pub(super) fn check_revision(revision: &str) -> Result<(), &'static str> {
    if revision.is_empty() {
        return Err("it is empty");
    }
    if revision.len() > MAX_REVISION_BYTES {
        return Err("it is longer than 255 bytes");
    }
    if revision.chars().any(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(
            "it contains a character git does not allow in a ref name (a control character, a space, or one of ~ ^ : ? * [ \\)",
        );
    }
    if revision.starts_with('/') {
        return Err("it starts with `/` (an absolute path)");
    }
    if revision.ends_with('/') || revision.contains("//") {
        return Err("it has an empty `/`-separated component");
    }
    if revision.contains("..") {
        return Err("it contains `..`");
    }
    if revision.split('/').any(|c| c.starts_with('.')) {
        return Err("a `/`-separated component starts with `.`");
    }
    if revision.split('/').any(|c| c.ends_with(".lock")) {
        return Err("a `/`-separated component ends with `.lock`");
    }
    if revision.ends_with('.') {
        return Err("it ends with `.`");
    }
    if revision == "@" || revision.contains("@{") {
        return Err("it is `@` or contains `@{`");
    }
    Ok(())
}

/// Checks the path of a file in the repository: `/`-separated components of letters,
/// digits, `-`, `_` and `.`, none empty or starting with `.`.
pub(super) fn check_file_name(file: &str) -> Result<(), &'static str> {
    if file.is_empty() || file.len() > MAX_REVISION_BYTES {
        return Err("it is empty or longer than 255 bytes");
    }
    for component in file.split('/') {
        if component.is_empty() {
            return Err("it has an empty `/`-separated component (or starts with `/`)");
        }
        if component.starts_with('.') {
            return Err("a `/`-separated component starts with `.` (such as `..`)");
        }
        if !component
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err("only letters, digits, `-`, `_`, `.` and `/` may appear in it");
        }
    }
    Ok(())
}

/// A value for an error message: at most 200 characters (a header can be long).
pub(super) fn shown(value: &str) -> String {
    const MAX: usize = 200;
    if value.chars().count() <= MAX {
        value.to_string()
    } else {
        let mut short: String = value.chars().take(MAX).collect();
        short.push('…');
        short
    }
}
