use std::fmt;

/// A registry server address: `http(s)://host[:port][/path]`.
///
/// Both registries are reached over HTTP (Nacos v2's gRPC port is derived from the HTTP
/// one), so other schemes are refused here rather than failing later at connect time.
/// Credentials in the URL are refused too: they have their own fields and would otherwise
/// end up in logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    pub scheme: String,
    /// Host name or IP address; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Empty, or starting with `/`.
    pub path: String,
}

impl ServerUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| format!("{raw:?} is not an absolute URL (expected http://host:port)"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "scheme {scheme:?} is not supported (use http or https)"
            ));
        }
        if rest.contains(['?', '#']) {
            return Err(format!("{raw:?}: query and fragment are not supported"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not supported (use username/password or token)".into(),
            );
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| format!("{raw:?}: bad host"))?;
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{raw:?}: port {p:?} is not in 1-65535"))?,
            ),
        };
        Ok(Self {
            scheme,
            host: host.to_string(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The port, or `default` when the URL names none.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }

    /// The scheme's own port (80/443), which is what an HTTP client uses for a URL without
    /// one; Consul's client in HTNN does exactly that.
    pub fn scheme_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.scheme == "https" { 443 } else { 80 })
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &authority[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            tail => (host, Some(tail.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~%".contains(c);
    let ok = !host.is_empty() && (host.starts_with('[') || host.chars().all(plain));
    ok.then_some((host, port))
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_paths() {
        let u = ServerUrl::parse("HTTP://nacos.local:8849/nacos/").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("http", "nacos.local", Some(8849), "/nacos")
        );
        let u = ServerUrl::parse("https://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", None));
        assert_eq!(u.scheme_port(), 443);
        assert_eq!(u.port_or(8848), 8848);
        assert_eq!(ServerUrl::parse("http://[::1]:9/").unwrap().port, Some(9));
        assert_eq!(
            ServerUrl::parse("http://127.0.0.1:8500")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8500"
        );
    }

    #[test]
    fn rejects_what_a_client_could_not_use() {
        for bad in [
            "nacos:8848",
            "tcp://a:1",
            "http://",
            "http://:80",
            "http://a:0",
            "http://a:70000",
            "http://a:x",
            "http://a b",
            "http://u:p@a",
            "http://a/?x=1",
            "http://[::1",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(
            ServerUrl::parse("ftp://a")
                .unwrap_err()
                .contains("use http or https")
        );
    }
}
