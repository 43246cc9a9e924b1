//! What a `std::fs::OpenOptions` asks for, as far as opening a mapped file must know it.
//!
//! A truncating open (`create`, `open_with` with `truncate(true)`) must not let the kernel cut
//! the file: another handle of the process may map it, and a cut it does not know of makes its
//! next access fault. So the file is opened without `O_TRUNC` and cut through the registry's
//! resize protocol (`MappedFile::from_file`). `OpenOptions` has setters only; its `Debug` form,
//! which lists every field by name, is the one place that says whether `truncate` was set.
//! The unit tests below pin that form: if it ever changes, they fail (and until then, an
//! unrecognised form opens with the options as given, the kernel truncating as before).

use std::fs::OpenOptions;
use std::io;

/// The value of the boolean field `name` in `OpenOptions`' `Debug` form.
fn field(debug: &str, name: &str) -> Option<bool> {
    let key = format!(" {name}: ");
    let at = debug.find(&key)? + key.len();
    let rest = &debug[at..];
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

/// `options` without `truncate`, and whether the caller must cut the file to 0 bytes after
/// opening it. Combinations std refuses with a truncation (no write access, or `append`) are
/// refused the same way (`InvalidInput`) before anything is opened. With `create_new` the file
/// is new and nothing is cut (std ignores `truncate` there too).
pub(super) fn without_truncate(options: &OpenOptions) -> io::Result<(OpenOptions, bool)> {
    let debug = format!("{options:?}");
    let (Some(truncate), Some(write), Some(append), Some(create_new)) = (
        field(&debug, "truncate"),
        field(&debug, "write"),
        field(&debug, "append"),
        field(&debug, "create_new"),
    ) else {
        return Ok((options.clone(), false));
    };
    if !truncate || create_new {
        return Ok((options.clone(), false));
    }
    if append || !write {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "truncate(true) needs write(true) and cannot go with append(true)",
        ));
    }
    let mut opened = options.clone();
    opened.truncate(false);
    Ok((opened, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(o: &OpenOptions) -> Option<bool> {
        without_truncate(o).ok().map(|(_, t)| t)
    }

    #[test]
    fn the_debug_form_tells_truncate_apart() {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        assert_eq!(parsed(&o), Some(false));
        o.truncate(true);
        assert_eq!(parsed(&o), Some(true));
        let (opened, _) = without_truncate(&o).unwrap();
        assert_eq!(field(&format!("{opened:?}"), "truncate"), Some(false));
        o.create_new(true);
        assert_eq!(parsed(&o), Some(false));
    }

    #[test]
    fn refusals_match_std() {
        let mut o = OpenOptions::new();
        o.read(true).truncate(true);
        assert_eq!(
            without_truncate(&o).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        o.append(true);
        assert_eq!(
            without_truncate(&o).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
