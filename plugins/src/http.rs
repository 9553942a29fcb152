//! Small HTTP helpers: path/query handling and content-type checks.

/// Splits `:path` into the path and the query string (without `?`). A fragment is dropped.
pub fn split_path(path: &str) -> (&str, Option<&str>) {
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    }
}

/// Decoded values of parameter `name` in a raw query string (`a=1&b=2`). Keys and values are
/// percent-decoded and `+` means a space, as in HTML form encoding.
pub fn query_values(query: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k) == name {
            out.push(percent_decode(v));
        }
    }
    out
}

/// `path` with every occurrence of query parameter `name` removed, or `None` if it had none.
pub fn remove_query_param(path: &str, name: &str) -> Option<String> {
    let (base, fragment) = match path.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (path, None),
    };
    let (p, query) = base.split_once('?')?;
    let mut removed = false;
    let mut kept = String::with_capacity(query.len());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if percent_decode(key) == name {
            removed = true;
            continue;
        }
        if !kept.is_empty() {
            kept.push('&');
        }
        kept.push_str(pair);
    }
    if !removed {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    out.push_str(p);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// Percent-decodes `s` (`+` → space). Invalid escapes are kept literally; invalid UTF-8 is
/// replaced.
pub fn percent_decode(s: &str) -> String {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a Content-Type denotes JSON (`application/json`, `application/*+json`).
pub fn is_json_content_type(ct: &str) -> bool {
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.len() > 5 && mime[mime.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// differ. Use it for every credential comparison.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(split_path("/a?b=1#f"), ("/a", Some("b=1")));
        assert_eq!(split_path("/a"), ("/a", None));
    }

    #[test]
    fn query() {
        assert_eq!(query_values("a=1&b=x%20y&a=2&c", "a"), vec!["1", "2"]);
        assert_eq!(query_values("a=1&b=x%20y+z", "b"), vec!["x y z"]);
        assert_eq!(query_values("c&d=", "c"), vec![""]);
        assert_eq!(query_values("k%61=v", "ka"), vec!["v"]);
        assert!(query_values("", "a").is_empty());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%"), "A%");
    }

    #[test]
    fn remove_param() {
        assert_eq!(
            remove_query_param("/p?a=1&b=2&a=3", "a").as_deref(),
            Some("/p?b=2")
        );
        assert_eq!(remove_query_param("/p?a=1", "a").as_deref(), Some("/p"));
        assert_eq!(remove_query_param("/p?b=1", "a"), None);
        assert_eq!(remove_query_param("/p", "a"), None);
        assert_eq!(
            remove_query_param("/p?a=1&c#x", "a").as_deref(),
            Some("/p?c#x")
        );
    }

    #[test]
    fn json_ct() {
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("application/problem+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("json"));
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
