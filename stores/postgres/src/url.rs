//! The store's connection string: parsed by the client library (a
//! `postgres://` / `postgresql://` URL or `key=value` pairs), and shown
//! only with its password hidden ([`redact`], which hides the password of
//! any `scheme://user:password@…` URL, so a wrong scheme is safe to show).

/// `url` with any password replaced by `***`: the user-info password of a
/// URL (`postgres://user:secret@host/db`), a `password=` query parameter,
/// or a `password=` pair of the key/value form. Everything the store
/// logs or puts in an error goes through this.
pub fn redact(url: &str) -> String {
    // Any `scheme://` URL (a wrong scheme is reported with its text too).
    let scheme_end = url
        .find("://")
        .filter(|&i| i > 0 && url[..i].chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)));
    if let Some(rest_at) = scheme_end.map(|i| i + 3) {
        let (scheme, rest) = url.split_at(rest_at);
        // The authority ends at the first '/', '?' or '#' after the last '@'
        // before them; a password may hold '/' only percent-encoded.
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let (userinfo, host) = authority.split_at(at);
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***{host}"),
                    None => authority.to_string(),
                }
            }
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let q: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{path}?{}", q.join("&"))
            }
            None => tail.to_string(),
        };
        return format!("{scheme}{authority}{tail}");
    }
    redact_key_value(url)
}

/// The `key=value` form: the value after `password` (quoted or not).
fn redact_key_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(i) = lower.find("password") else {
            out.push_str(rest);
            return out;
        };
        let after = &rest[i + "password".len()..];
        let trimmed = after.trim_start();
        let Some(value) = trimmed.strip_prefix('=') else {
            out.push_str(&rest[..i + "password".len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..i]);
        out.push_str("password=***");
        let value = value.trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote not escaped by a backslash.
            let mut escaped = false;
            let mut end = quoted.len();
            for (j, ch) in quoted.char_indices() {
                match ch {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = j + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            1 + end.min(quoted.len())
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end.min(value.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_in_every_form() {
        assert_eq!(
            redact("postgres://kozmo:s3cr%40t@db.example:5432/kozmo"),
            "postgres://kozmo:***@db.example:5432/kozmo"
        );
        assert_eq!(
            redact("postgresql://u:p@h/db?password=x&sslmode=disable"),
            "postgresql://u:***@h/db?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h"), "postgres://h");
        assert_eq!(redact("redis://x:secret@h"), "redis://x:***@h");
        assert_eq!(
            redact("host=h user=u password=secret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact("host=h password = 'a b\\' c' dbname=d"),
            "host=h password=*** dbname=d"
        );
        for s in [
            "postgres://u:secret@h/d",
            "host=h password=secret",
            "password='secret'",
            "postgresql://h/d?password=secret",
        ] {
            assert!(!redact(s).contains("secret"), "{s} → {}", redact(s));
        }
    }
}
