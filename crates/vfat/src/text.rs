//! Pure text edits of the Raspberry Pi boot files: `cmdline.txt` (one line of kernel flags) and
//! `config.txt` (one setting per line).

/// The kernel command line `text` (the first line of `cmdline.txt`) with `flags` added: a flag
/// already present (the same word) is left alone; a flag `key=value` replaces the first
/// `key=...` word in its place (later `key=...` words are dropped, so that the kernel sees one
/// value), and is appended when there is none; a flag without `=` is appended when missing. Words keep their order. Nothing changes when every flag is
/// present (the text is returned as it is); otherwise the line is rewritten with single spaces.
/// Lines after the first (which the firmware ignores) are kept as they are, and so is the single
/// trailing newline, or its absence.
///
/// ```
/// use kiln_vfat::cmdline_add;
/// let line = "console=serial0,115200 root=LABEL=writable rootwait\n";
/// assert_eq!(
///     cmdline_add(line, &["cgroup_memory=1", "cgroup_enable=memory", "rootwait"]),
///     "console=serial0,115200 root=LABEL=writable rootwait cgroup_memory=1 cgroup_enable=memory\n",
/// );
/// assert_eq!(cmdline_add("quiet console=tty1", &["console=ttyAMA0"]), "quiet console=ttyAMA0");
/// ```
pub fn cmdline_add<S: AsRef<str>>(text: &str, flags: &[S]) -> String {
    let (line, rest) = match text.split_once('\n') {
        Some((l, r)) => (l, Some(r)),
        None => (text, None),
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let mut changed = false;
    for flag in flags {
        let flag = flag.as_ref().trim();
        if flag.is_empty() {
            continue;
        }
        let Some((key, _)) = flag.split_once('=') else {
            if !words.iter().any(|w| w == flag) {
                words.push(flag.to_owned());
                changed = true;
            }
            continue;
        };
        let same: Vec<usize> = (0..words.len())
            .filter(|&i| words[i].split_once('=').is_some_and(|(k, _)| k == key))
            .collect();
        match same.as_slice() {
            [only] if words[*only] == flag => {}
            [] => {
                words.push(flag.to_owned());
                changed = true;
            }
            [first, later @ ..] => {
                words[*first] = flag.to_owned();
                for &j in later.iter().rev() {
                    words.remove(j);
                }
                changed = true;
            }
        }
    }
    if !changed {
        return text.to_owned();
    }
    let mut out = words.join(" ");
    if let Some(rest) = rest {
        out.push('\n');
        out.push_str(rest);
    }
    out
}

/// `text` (a line-based file such as `config.txt`) with each of `lines` that is not already one
/// of its lines (compared without surrounding whitespace) appended, in order, each ending in a
/// newline. A last line without a newline gets one first. Nothing changes when every line is
/// present.
///
/// ```
/// use kiln_vfat::config_lines;
/// let text = "[all]\narm_64bit=1\n";
/// assert_eq!(config_lines(text, &["arm_64bit=1", "dtparam=audio=on"]), "[all]\narm_64bit=1\ndtparam=audio=on\n");
/// assert_eq!(config_lines("a", &["b"]), "a\nb\n");
/// assert_eq!(config_lines(text, &["arm_64bit=1"]), text);
/// ```
pub fn config_lines<S: AsRef<str>>(text: &str, lines: &[S]) -> String {
    let mut out = text.to_owned();
    for line in lines {
        let line = line.as_ref().trim();
        if line.is_empty() || out.lines().any(|l| l.trim() == line) {
            continue;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cmdline_cases() {
        assert_eq!(cmdline_add("", &["a"]), "a");
        assert_eq!(cmdline_add("\n", &["a"]), "a\n");
        assert_eq!(cmdline_add("a b\n", &["a"]), "a b\n");
        assert_eq!(cmdline_add("a  b\n", &["c"]), "a b c\n");
        assert_eq!(cmdline_add("k=1 x k=2 y\n", &["k=3"]), "k=3 x y\n");
        assert_eq!(cmdline_add("k x\n", &["k=3"]), "k x k=3\n");
        assert_eq!(
            cmdline_add("a\r\nsecond line\n", &["b"]),
            "a b\nsecond line\n"
        );
        assert_eq!(cmdline_add("a\n", &["a=1", "a=2"]), "a a=2\n");
    }

    #[test]
    fn config_cases() {
        assert_eq!(config_lines("", &["a"]), "a\n");
        assert_eq!(config_lines("a\n", &["  a "]), "a\n");
        assert_eq!(config_lines("x\n", &["a", "a"]), "x\na\n");
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-c]{1,2}(=[0-2]{1,2})?"
    }

    proptest! {
        #[test]
        fn cmdline_add_is_idempotent_and_keeps_other_flags(
            words in prop::collection::vec(word(), 0..8),
            flags in prop::collection::vec(word(), 0..5),
            newline in any::<bool>(),
        ) {
            let text = format!("{}{}", words.join(" "), if newline { "\n" } else { "" });
            let once = cmdline_add(&text, &flags);
            prop_assert_eq!(&cmdline_add(&once, &flags), &once);
            prop_assert_eq!(once.ends_with('\n'), newline);
            prop_assert_eq!(once.lines().count().max(1), 1);
            let out: Vec<&str> = once.split_whitespace().collect();
            let key = |w: &str| w.split_once('=').map(|(k, _)| k.to_owned());
            let replaced: Vec<String> = flags.iter().filter_map(|f| key(f)).collect();
            for w in &words {
                // A word survives unless a flag with its key replaced it.
                if key(w).is_none_or(|k| !replaced.contains(&k)) {
                    prop_assert!(out.contains(&w.as_str()), "{} dropped from {:?}", w, once);
                }
            }
            // The last flag of each key (and every bare flag) is present.
            for (i, f) in flags.iter().enumerate() {
                let later_same_key = key(f).is_some_and(|k| flags[i + 1..].iter().any(|g| key(g).as_ref() == Some(&k)));
                if !later_same_key {
                    prop_assert!(out.contains(&f.as_str()), "{} missing from {:?}", f, once);
                }
            }
        }

        #[test]
        fn config_lines_is_idempotent_and_keeps_the_text(
            text in "([a-c=0-2 ]{0,6}\n){0,5}[a-c]{0,3}",
            lines in prop::collection::vec("[a-c]{1,3}(=[0-2])?", 0..5),
        ) {
            let once = config_lines(&text, &lines);
            prop_assert_eq!(&config_lines(&once, &lines), &once);
            prop_assert!(once.starts_with(&text));
            for l in &lines {
                prop_assert!(once.lines().any(|x| x.trim() == l), "{} missing", l);
            }
        }
    }
}
