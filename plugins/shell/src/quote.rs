//! POSIX shell quoting for the wrapper script.

/// Quotes `word` for a POSIX shell so that it reaches the program as exactly
/// one argument, unchanged.
///
/// Every word is single-quoted (even plain ones: an unquoted `if`, `!` or
/// `A=b` in command position would mean something else to the shell);
/// a single quote inside becomes `'\''`.
///
/// ```
/// use kozmo_plugin_shell::quote::quote;
///
/// assert_eq!(quote("echo"), "'echo'");
/// assert_eq!(quote("it's $HOME"), r"'it'\''s $HOME'");
/// assert_eq!(quote(""), "''");
/// ```
pub fn quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str(r"'\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes each word and joins them with single spaces.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn plain_words_are_single_quoted() {
        assert_eq!(quote("echo"), "'echo'");
        assert_eq!(quote("/usr/bin/env"), "'/usr/bin/env'");
        assert_eq!(quote("A=b"), "'A=b'");
    }

    #[test]
    fn empty_word_stays_one_argument() {
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn single_quotes_are_closed_escaped_and_reopened() {
        assert_eq!(quote("'"), r"''\'''");
        assert_eq!(quote("don't"), r"'don'\''t'");
    }

    #[test]
    fn join_quotes_each_word() {
        let words = vec!["printf".to_string(), "%s\n".to_string(), "a b".to_string()];
        assert_eq!(join(&words), "'printf' '%s\n' 'a b'");
    }

    /// The real test: a shell gives the program back exactly the words.
    #[test]
    fn the_shell_reads_back_exactly_the_words() {
        let words: Vec<String> = [
            "plain",
            "",
            "two words",
            "it's",
            "''",
            "$HOME",
            "${PATH}",
            "`id`",
            "$(id)",
            "a\\b",
            "\"double\"",
            "semi;colon",
            "amp&pipe|",
            "glob*?[x]",
            "new\nline",
            "tab\there",
            "~user",
            "#hash",
            "!bang",
            "ünïcødé ✓",
            "-n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // printf repeats its format per argument: one NUL-terminated record per word.
        let script = format!("printf '%s\\0' {}", join(&words));
        let out = Command::new("/bin/sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        let got: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        let mut expected = words.clone();
        expected.push(String::new()); // after the last NUL
        assert_eq!(got, expected);
    }

    #[test]
    fn reserved_words_and_assignments_run_as_commands() {
        // `'if'` must be looked up as a command, not parsed as a keyword.
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("( {} ) 2>/dev/null; echo $?", join(&["if".to_string()])))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127");
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("( {} ) 2>/dev/null; echo $?", join(&["X=1".to_string()])))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127");
    }
}
