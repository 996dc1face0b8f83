//! `redis://[[user]:password@]host[:port][/db]`, with the password kept out
//! of every `Debug` and `Display`.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL with the password left out: safe to log and show.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

impl RedisUrl {
    /// Parses a URL; the error never repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        if url.starts_with("rediss://") {
            return Err(
                "rediss:// (TLS) is not supported: use redis:// on a trusted network, \
                        or a TLS tunnel (stunnel, spiped) in front of Redis"
                    .into(),
            );
        }
        let Some(rest) = url.strip_prefix("redis://") else {
            return Err("expected redis://[[user]:password@]host[:port][/db]".into());
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(auth) => match auth.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                // `redis://secret@host`: a lone word is the password, as redis-cli takes it.
                None => (None, Some(auth.to_string())),
            },
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse()
                    .map_err(|_| "the database after '/' must be a number".to_string())?,
            ),
            None => (rest, 0),
        };
        let (host, port) =
            crate::wire::split_host_port(hostport).ok_or("an IPv6 host needs its closing ']'")?;
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| "the port must be a number from 1 to 65535".to_string())?,
            None => 6379,
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            db,
            user,
            password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_never_shows_the_password() {
        let u = RedisUrl::parse("redis://app:s3cret@cache.local:6380/2").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.db,
                u.user.as_deref(),
                u.password.as_deref()
            ),
            ("cache.local", 6380, 2, Some("app"), Some("s3cret"))
        );
        assert_eq!(u.to_string(), "redis://app:***@cache.local:6380/2");
        assert!(!format!("{u:?}").contains("s3cret"));
        let u = RedisUrl::parse("redis://:pw@127.0.0.1").unwrap();
        assert_eq!(
            (u.user, u.password.as_deref(), u.port, u.db),
            (None, Some("pw"), 6379, 0)
        );
        let u = RedisUrl::parse("redis://[::1]:7000/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert!(RedisUrl::parse("rediss://h").unwrap_err().contains("TLS"));
        for bad in [
            "http://h",
            "redis://",
            "redis://h:x",
            "redis://h/x",
            "redis://:pw@:1",
        ] {
            let err = RedisUrl::parse(bad).unwrap_err();
            assert!(!err.contains("pw"), "{bad}: {err}");
        }
    }
}
